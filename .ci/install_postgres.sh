#!/usr/bin/env bash
# The PostgreSQL 15 server the instance tests start (itap_assets_tests/postgres_server.py): Debian's postgresql-15
# (initdb and pg_ctl, and the postgres user the server runs as when the tests run as root). Its own cluster is not
# used: the tests make theirs in a temporary directory.
exec "$(dirname "$0")/apt_install.sh" postgresql-15 /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/pg_ctl
