"""Prove the Derby peer with its own client: `ij` over the network driver, independent of us."""

from __future__ import annotations

from tests.peers.derby import Derby, jdbc_url, run_ij


def test_ij_reads_and_writes_through_the_network_server(derby: Derby) -> None:
    """ij connects over DRDA to the fixture's database, writes a row and reads it back."""
    output = run_ij(
        f"connect '{jdbc_url(derby)}';\n"
        "create table flow_probe (id int primary key, name varchar(20));\n"
        "insert into flow_probe values (1, 'drda');\n"
        "select name from flow_probe where id = 1;\n"
        "drop table flow_probe;\n"
        "disconnect;\nexit;\n"
    )
    assert "ERROR" not in output, output
    assert "drda" in output
    assert "1 row selected" in output


def test_ij_is_told_an_unknown_database_is_missing(derby: Derby) -> None:
    """Without create=true Derby refuses a database it does not hold (at login, not before)."""
    output = run_ij(f"connect '{jdbc_url(derby, 'nosuchdb')}';\nexit;\n")
    assert "ERROR XJ004" in output or "ERROR 08004" in output, output
    assert "nosuchdb" in output
