# Everyday autogolf tasks. `just` is optional: each recipe is the plain command next to it,
# and the README gives the same commands in bash.   just --list   shows them all.

set positional-arguments := true

autogolf := ".venv/bin/autogolf"

# Create .venv, install autogolf and its tools, build the offline sample data.
setup:
    bash scripts/setup.sh

# Lint and run the tests (extra arguments go to pytest, e.g. `just test -k progress`).
test *args:
    bash scripts/test.sh "$@"

# The loop in this terminal, e.g. `just run --until 07:00` (arguments go to `autogolf run`).
run *args:
    {{autogolf}} run "$@"

# The demo: set up, then a few smoke experiments on the sample data and the results table.
demo:
    bash scripts/quickstart.sh

# One manual benchmark of one profile on this checkout: `just bench` or `just bench smoke`.
bench profile="breadth":
    {{autogolf}} bench --profile {{profile}}

# Incumbents, counts, the running experiment and its progress.
status:
    {{autogolf}} status

# The HTML + Markdown report under .autogolf/report/.
report *args:
    {{autogolf}} report "$@"

# Environment check: MLX, data, git, disk, BLAS.
doctor:
    {{autogolf}} doctor

# The ideas backlog with tested outcomes (`just ideas add "..."`; see `autogolf ideas -h`).
ideas *args:
    {{autogolf}} ideas "$@"

# Overnight in a detached tmux session (`tmux attach -t autogolf` to watch).
overnight *args:
    bash scripts/tmux-pi-autoresearch.sh "$@"

# Overnight in this terminal, with caffeinate on macOS and a log under .autogolf/logs/.
night *args:
    bash scripts/run-pi-autoresearch.sh "$@"
