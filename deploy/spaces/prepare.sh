#!/usr/bin/env bash
# Fill a clone of a Hugging Face Space's repository with what the Space builds: the project's tracked files,
# this folder's README.md (with the Space's header), a Dockerfile that is deploy/Dockerfile followed by
# Dockerfile.space (the Space's own lines) and deploy/Dockerfile.dockerignore as .dockerignore, at its root.
#   deploy/spaces/prepare.sh ~/spaces/text-to-face && cd ~/spaces/text-to-face && git add -A && git push
set -euo pipefail
dest=${1:?usage: prepare.sh SPACE_CHECKOUT}
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
mkdir -p "$dest"
git -C "$repo" ls-files -z | (cd "$repo" && xargs -0 tar -cf - ) | tar -xf - -C "$dest"
cat "$repo/deploy/Dockerfile" "$here/Dockerfile.space" > "$dest/Dockerfile"
cp "$here/README.md" "$dest/"
cp "$repo/deploy/Dockerfile.dockerignore" "$dest/.dockerignore"  # what COPY . . leaves out, the Space's .git too
echo "$dest: the Space's files are ready (Dockerfile, README.md with the Space header, the project)"
