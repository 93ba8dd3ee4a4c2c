#!/usr/bin/env bash
# Runs the cross-language interop tests (interop_test.go) with every tool
# they need, so that none of them skips: on a Debian machine, as root, it
# installs what is missing of Debian's python3-protobuf (for /usr/bin/python3),
# protobuf-compiler (protoc, to generate message_pb2.py), nodejs and npm,
# installs the pinned protobufjs with npm ci, and runs the tests with
# BUFFSTREAMS_INTEROP=1, which turns a missing tool into a failure.
#
#	bash test/interop/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
if ! /usr/bin/python3 -c 'import google.protobuf' 2>/dev/null; then
	missing+=(python3-protobuf)
fi
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

if ((${#missing[@]})); then
	echo "--- installing ${missing[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		echo "run.sh: ${missing[*]} missing; run as root on Debian to install them" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "--- tools: $(/usr/bin/python3 -c 'import google.protobuf as p; print("python3-protobuf", p.__version__)'), $(protoc --version), node $(node --version), npm $(npm --version 2>/dev/null)"

echo "--- npm ci (test/interop/js)"
(cd test/interop/js && npm ci --no-audit --no-fund --loglevel=error)

echo "--- interop tests"
BUFFSTREAMS_INTEROP=1 go test -race -count=1 -v ./test/interop/
