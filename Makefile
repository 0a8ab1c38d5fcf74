# The two set-up commands of the README: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
# Real peers and tools the tests start themselves (see tests/peers/).
APT_PACKAGES = openssh-server nginx prometheus prometheus-alertmanager iptables nftables iproute2 iputils-ping openssl ca-certificates \
	slapd ldap-utils \
	freetds-bin \
	samba smbclient samba-common-bin \
	derby-tools libderby-java libderbyclient-java default-jre-headless \
	nmap \
	squid \
	snmpd snmp \
	nagios4-core \
	chromium
APT_BINARIES = /usr/sbin/sshd /usr/sbin/nginx /usr/bin/prometheus /usr/bin/promtool /usr/bin/prometheus-alertmanager /usr/bin/amtool /usr/sbin/iptables-nft /usr/sbin/nft /usr/bin/ping /usr/bin/openssl \
	/usr/sbin/slapd /usr/bin/ldapwhoami \
	/usr/bin/tsql \
	/usr/sbin/smbd /usr/sbin/nmbd /usr/libexec/samba/samba-dcerpcd /usr/bin/smbclient /usr/bin/nmblookup /usr/bin/smbpasswd \
	/usr/bin/ij /usr/bin/java \
	/usr/bin/nmap \
	/usr/sbin/squid /usr/lib/squid/basic_ncsa_auth \
	/usr/sbin/snmpd /usr/bin/snmpget \
	/usr/sbin/nagios4 \
	/usr/bin/chromium

# pysap (OWASP), the independent SAP NI client that proves tests/peers/sap_ni_fake.py. It pins
# cryptography<49, older than the exporter's; the tests use only its NI layer, which needs scapy
# alone (a test dependency), so it is installed without its pins.
PYSAP = pysap==0.2.1

.PHONY: run test lint typecheck pytest system-packages clean

# Running needs only the exporter's own dependencies; the tests add theirs on top.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/pip install --quiet --no-deps $(PYSAP)
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/certero-flow-exporter serve

system-packages:
	@missing=0; for binary in $(APT_BINARIES); do [ -x $$binary ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy --strict exporter tests bench dashboards alerts

pytest: system-packages $(VENV)/.installed
	$(VENV)/bin/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) build *.egg-info
