# Shared locations for scripts/*; sourced, not run.
: "${ESP_ROOT:=/opt/esp}"                       # world-readable: the postgres user reads it
: "${ESP_PG_PREFIX:=$ESP_ROOT/pgsql-18}"        # "pgsql" in the path keeps contrib out of .../postgresql subdirs
export ESP_ROOT ESP_PG_PREFIX
export PG_CONFIG="$ESP_PG_PREFIX/bin/pg_config"
export PATH="$HOME/.cargo/bin:$PATH"
# absolute, for scripts that call each other after a cd (bootstrap builds PostgreSQL in its source tree)
ESP_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
