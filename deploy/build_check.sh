#!/usr/bin/env bash
# Build deploy/Dockerfile with buildah and run the image with podman, on a machine that reaches no image registry:
#   1. base:  a Debian 12 (bookworm) root made with debootstrap from Debian's mirror, imported as
#             localhost/debian-base:bookworm (skipped when that image is already there)
#   2. build: deploy/Dockerfile with --build-arg BASE=localhost/debian-base:bookworm --build-arg PYTHON=debian,
#             the build machine's pip settings and the local wheel folders they name mounted read-only
#   3. run:   `t2f serve --model tiny-sd15` in the image, GET /health, one POST /generate-image (a PNG that
#             carries its record), then the container is stopped and removed
# Each step prints how long it took. Run it as root from anywhere:  bash deploy/build_check.sh
# Needs Debian's buildah podman runc debootstrap (apt-get install -y buildah podman runc debootstrap).
# T2F_CHECK_STAGE=resolve (what CI runs: tests/test_deploy.py) builds every step of the Dockerfile but runs the
# README's install line with `pip install --dry-run --report`: the base, the system packages, Python 3.11, the
# user and the image's settings are built and checked, and the install is resolved in the image, not installed.
# The full build took 9 to 11 minutes on 2 cores (deploy/README.md), too long for CI.
# Environment: T2F_CHECK_DIR (scratch folder, default /var/tmp/t2f-build-check), T2F_CHECK_IMAGE (the tag built,
# default localhost/text-to-face:check), T2F_CHECK_KEEP=1 keeps that image afterwards (it is some GB),
# T2F_CHECK_MIRROR (the Debian mirror debootstrap uses), T2F_CHECK_PORT (host port of the API, default 18000).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${T2F_CHECK_DIR:-/var/tmp/t2f-build-check}
base=localhost/debian-base:bookworm
image=${T2F_CHECK_IMAGE:-localhost/text-to-face:check}
mirror=${T2F_CHECK_MIRROR:-http://deb.debian.org/debian}
port=${T2F_CHECK_PORT:-18000}
stage=${T2F_CHECK_STAGE:-full}
case $stage in full|resolve) ;; *) echo "build_check: T2F_CHECK_STAGE is full or resolve, not $stage" >&2; exit 2;; esac
name=t2f-build-check-$$
mkdir -p "$work"
for tool in buildah podman debootstrap; do
  command -v $tool >/dev/null || { echo "build_check: $tool is missing (apt-get install -y buildah podman runc debootstrap)" >&2; exit 2; }
done

t0=$(date +%s)
step() { local s=$(date +%s); echo "== $1"; shift; "$@"; echo "== took $(( $(date +%s) - s )) s"; }

# Container settings for a sandbox: a process here may lower its limits but not raise them (podman asks for
# nofile=1048576 by default), and crun refuses the hybrid cgroup v1/v2 layout that runc accepts.
nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768  # runc here fails above 32768
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
cat > "$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
cgroup_manager = "cgroupfs"
$(command -v runc >/dev/null && echo 'runtime = "runc"')
EOF
export CONTAINERS_CONF="$work/containers.conf"

make_base() {
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; return 1; }
  tar -C "$work/rootfs" -c . | podman import --change 'CMD ["bash"]' - "$base"
  rm -rf "$work/rootfs"
}
if podman image exists "$base"; then echo "== base: $base is there"; else step "base: debootstrap bookworm, import as $base" make_base; fi

# pip inside the build reads the settings pip has here (`pip config list`: find-links, index URLs, constraints,
# certificate), written as one /etc/pip.conf; every local folder or file they name is mounted read-only under
# /tmp/host-pip, so the README's install line takes the same wheels as on this machine (here: the CUDA build of
# torch and NVIDIA's libraries from local folders) and downloads only what it would download here.
pipconf() {
  python3 - "$work/pip.conf" <<'EOF'
import subprocess, sys, re, os
settings = {}
for line in subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True, text=True).stdout.splitlines():
    m = re.match(r"(:env:|global|install)\.([\w-]+)='(.*)'$", line)
    if m and (m[1] == ':env:' or m[2] not in settings): settings[m[2]] = m[3]
for key in [k for k in os.environ if k.startswith('PIP_')]:
    settings[key[4:].lower().replace('_', '-')] = os.environ[key]
mounts, conf = [], {}
def inside(path):  # where `path` is seen in the build: a file or folder of its own under /tmp/host-pip
    mounts.append((path, f'/tmp/host-pip/{len(mounts)}{os.path.splitext(path)[1]}')); return mounts[-1][1]
for key in ['find-links', 'extra-index-url', 'index-url', 'constraint', 'cert', 'trusted-host', 'default-timeout', 'timeout']:
    values = []
    for value in settings.get(key, '').split():
        path = value[len('file://'):] if value.startswith('file://') else value
        if key not in ('trusted-host', 'default-timeout', 'timeout') and path.startswith('/') and os.path.exists(path):
            path = path.rstrip('/')
            if path.endswith('/simple'): path = inside(os.path.dirname(path)) + '/simple'  # its files lie beside it
            else: path = inside(path)
            value = 'file://' + path if value.startswith('file://') else path
        values.append(value)
    if values: conf[key] = ' '.join(values)
with open(sys.argv[1], 'w') as f: f.write('[global]\n' + ''.join(f'{k} = {v}\n' for k, v in conf.items()))
print(' '.join(f'--volume={a}:{b}:ro' for a, b in mounts))
EOF
}
volumes="$(pipconf) --volume=$work/pip.conf:/etc/pip.conf:ro"
echo "== pip settings of this machine, for the build:"; sed 's/^/   /' "$work/pip.conf"; echo "   mounts: $volumes"

# --isolation chroot: buildah runs each RUN step without an OCI runtime or its own network namespace (the host's)
dockerfile=$repo/deploy/Dockerfile
if [ $stage = resolve ]; then
  # the Dockerfile with its README install line (`pip install A && pip install B`) run as a dry run with a report
  install=$(grep -m1 '# install$' "$repo/README.md" | sed 's/[[:space:]]*# install$//')
  grep -qxF "RUN $install" "$dockerfile" || { echo "build_check: deploy/Dockerfile has no RUN $install" >&2; exit 1; }
  dockerfile=$work/Dockerfile.resolve
  INSTALL="RUN $install" python3 - "$repo/deploy/Dockerfile" "$dockerfile" <<'EOF'
import os, sys
line = os.environ['INSTALL']; parts = line.split(' && ')
dry = ' && '.join(p.replace('pip install ', f'pip install --dry-run --report /opt/install-report-{i}.json ', 1)
                  for i, p in enumerate(parts))
open(sys.argv[2], 'w').write(open(sys.argv[1]).read().replace(line, dry))
EOF
  grep -F -- '--dry-run' "$dockerfile" | sed 's/^/   instead of the install: /'
fi
step "build: $(basename "$dockerfile") on $base as $image" \
  buildah bud --isolation chroot --layers -f "$dockerfile" --ignorefile "$repo/deploy/Dockerfile.dockerignore" \
    --build-arg BASE="$base" --build-arg PYTHON=debian $volumes -t "$image" "$repo"

cleanup() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  [ "${T2F_CHECK_KEEP:-0}" = 1 ] || podman rmi -f "$image" >/dev/null 2>&1 || true
}
trap cleanup EXIT

check_image() {
  local token; token=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  podman run -d --name "$name" -p "127.0.0.1:$port:8000" --shm-size=1g -e T2F_SERVE_TOKEN="$token" "$image" \
    t2f serve --host 0.0.0.0 --port 8000 --model tiny-sd15 >/dev/null
  local t=0
  until curl -sf "http://127.0.0.1:$port/health" >"$work/health.json" 2>/dev/null; do
    t=$((t + 2)); sleep 2
    if [ $t -ge 300 ] || [ "$(podman inspect -f '{{.State.Running}}' "$name")" != true ]; then
      podman logs "$name" 2>&1 | tail -40 >&2; echo "build_check: the server did not answer /health in ${t}s" >&2; return 1
    fi
  done
  echo "   GET /health after ${t}s: $(cat "$work/health.json")"
  curl -sf -m 300 -X POST "http://127.0.0.1:$port/generate-image" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"description": "a man of about 40 with a short beard", "size": 64, "steps": 2}' \
    -o "$work/generated.json" || { podman logs "$name" 2>&1 | tail -40 >&2; echo "build_check: POST /generate-image failed" >&2; return 1; }
  python3 - "$work/generated.json" "$work/generated.png" <<'EOF'
import base64, json, sys
answer = json.load(open(sys.argv[1])); image = answer['images'][0]; png = base64.b64decode(image['png'])
assert png[:8] == b'\x89PNG\r\n\x1a\n' and image['record']['id'] == image['id'], 'not a PNG with its record'
open(sys.argv[2], 'wb').write(png)
print(f"   POST /generate-image: a {len(png)}-byte PNG, record {image['id']}, prompt {answer['prompt'][:60]!r}...")
EOF
  podman stop -t 20 "$name" >/dev/null
}
check_resolved() {
  # what the image is (its user, Python, settings) and what the README's install resolved to in it
  local probe='echo "user=$(id -un):$(id -u) python=$(python --version 2>&1 | cut -d" " -f2)" \
"venv=$(command -v python) home=$HOME hf_home=$HF_HOME hf_owner=$(stat -c %U /data/hf)"; cat /opt/install-report-0.json'
  podman run --rm "$image" sh -c "$probe" > "$work/resolved.txt"
  head -1 "$work/resolved.txt" | sed 's/^/   image: /'
  python3 - "$work/resolved.txt" "$repo/settings.ini" <<'EOF'
import configparser, json, re, shlex, sys
lines = open(sys.argv[1]).read().split('\n', 1)
info = dict(kv.split('=', 1) for kv in lines[0].split())
assert info['user'] == 't2f:1000' and info['python'].startswith('3.11.') and info['venv'] == '/opt/venv/bin/python', info
assert info['hf_home'] == '/data/hf' and info['hf_owner'] == 't2f', info
report = json.loads(lines[1])
got = {re.sub(r'[-_.]+', '-', i['metadata']['name']).lower(): i['metadata']['version'] for i in report['install']}
cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(sys.argv[2])
wanted = shlex.split(cfg['DEFAULT']['requirements']) + cfg['DEFAULT']['dev_requirements'].split()
names = [re.sub(r'[-_.]+', '-', re.match(r'[A-Za-z0-9_.-]+', w)[0]).lower() for w in wanted]
missing = [n for n in names + ['text-to-face'] if n not in got]
assert not missing, f'the install in the image resolves without {missing}'
print(f"   install resolved in the image: {len(got)} distributions, every requirement of settings.ini among them "
      f"(torch {got['torch']}, diffusers {got['diffusers']}, ray {got['ray']})")
EOF
}
if [ $stage = resolve ]; then step "check: the image's user, Python and settings; the install it resolved" check_resolved
else step "run: t2f serve --model tiny-sd15 in $image, GET /health, POST /generate-image" check_image; fi
echo "build_check: passed in $(( $(date +%s) - t0 )) s"
