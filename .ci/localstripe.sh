#!/usr/bin/env bash
# localstripe (a fake Stripe API server) for the test suite, in its own virtualenv:
# it pins its own aiohttp, which must not leak into the project's .venv.
#
#   .ci/localstripe.sh install   create .venv-localstripe when missing (idempotent)
#   .ci/localstripe.sh python    print the interpreter the tests start it with
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-localstripe
VERSION=1.15.10

case "${1:-}" in
install)
	if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import localstripe.server" 2>/dev/null; then
		exit 0
	fi
	command -v uv >/dev/null || python3 -m pip install --quiet uv
	uv venv --quiet --allow-existing -p python3.11 "$VENV"
	uv pip install --quiet --python "$VENV/bin/python" "localstripe==$VERSION"
	"$VENV/bin/python" -c "import localstripe.server" 
	echo "localstripe $VERSION installed in $VENV"
	;;
python)
	echo "$PWD/$VENV/bin/python"
	;;
*)
	echo "usage: $0 install|python" >&2
	exit 2
	;;
esac
