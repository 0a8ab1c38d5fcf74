# certero-flow-exporter: serves on 10163; mount a config at /etc/certero-flow-exporter/config.yaml.
FROM python:3.11-slim-bookworm

WORKDIR /opt/certero-flow-exporter
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10163 --no-create-home exporter

# Raw ICMP sockets need CAP_NET_RAW; unprivileged ping sockets need net.ipv4.ping_group_range.
USER exporter
EXPOSE 10163
ENTRYPOINT ["certero-flow-exporter"]
CMD ["serve", "--listen", "0.0.0.0:10163"]
