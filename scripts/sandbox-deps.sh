#!/usr/bin/env bash
# Install and start what the sandboxes need (bubblewrap; Docker engine and a
# local base image). Filled in by the tools-and-sandboxes work.
exit 0
