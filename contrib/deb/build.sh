#!/usr/bin/env bash
# Builds the Debian package of Themis: themis_<version>_<arch>.deb, with dpkg-deb.
#
#   bash contrib/deb/build.sh [OUTDIR]        (default OUTDIR: the repository root)
#
# The package holds:
#   /usr/lib/themis/node_modules/   themis-milter and the workspace plugins (npm pack of this
#                                   checkout, compiled) with their production dependencies
#   /usr/lib/themis/node/           the Node.js 24 runtime (Debian 12's nodejs is too old)
#   /usr/bin/themis                 the `themis` command, on that runtime
#   /lib/systemd/system/themis.service   (from contrib/systemd/, adapted by adapt.mjs)
#   /etc/themis/themis.config.ts    the commented starter configuration (`themis init`)  conffile
#   /etc/default/themis             the unit's environment (from contrib/systemd/)       conffile
# and maintainer scripts that create the `themis` system user (postinst), start nothing, stop the
# service on removal (prerm) and remove everything on purge (postrm).
#
# Needs: dpkg-deb, npm, a Node.js 24 binary (node_modules/node/bin/node, from the `node` dev
# dependency; or THEMIS_DEB_NODE=/path/to/node), the registry or npm's cache for the production
# dependencies. Runs as any user (dpkg-deb --root-owner-group: everything is owned by root).
#
# Environment:
#   THEMIS_DEB_NODE        the Node.js binary to ship (default node_modules/node/bin/node); major 24
#   THEMIS_DEB_COMPRESS    dpkg-deb compressor: xz (default), gzip, zstd, none
#   THEMIS_DEB_LEVEL       its level (dpkg-deb -z), default the compressor's default
#   THEMIS_DEB_MAINTAINER  the Maintainer field
#   THEMIS_DEB_SKIP_BUILD  1 = do not run `npm run build` (dist/ is up to date)
#   SOURCE_DATE_EPOCH      timestamps of the files (default: the last commit's time)
#
# Prints the path of the .deb on stdout (the last line); progress goes to stderr.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUTDIR=${1:-$ROOT}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

log() { printf '[deb] %s\n' "$*" >&2; }
die() { printf '[deb] error: %s\n' "$*" >&2; exit 1; }

command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian package dpkg)"

NODE_BIN=${THEMIS_DEB_NODE:-$ROOT/node_modules/node/bin/node}
[ -x "$NODE_BIN" ] || die "no Node.js binary at $NODE_BIN: run npm install (the \`node\` dev dependency) or set THEMIS_DEB_NODE"
NODE_BIN=$(readlink -f "$NODE_BIN")
NODE_VERSION=$("$NODE_BIN" -p process.versions.node)
[ "${NODE_VERSION%%.*}" = 24 ] || die "$NODE_BIN is Node.js $NODE_VERSION; the package carries Node.js 24"
NODE_PLATFORM=$("$NODE_BIN" -p process.platform)
NODE_ARCH=$("$NODE_BIN" -p process.arch)
case "$NODE_PLATFORM-$NODE_ARCH" in
linux-x64) DEB_ARCH=amd64 ;;
linux-arm64) DEB_ARCH=arm64 ;;
*) die "cannot package a Node.js for $NODE_PLATFORM-$NODE_ARCH" ;;
esac
# npm (and the build) run on that Node too
export PATH="$(dirname "$NODE_BIN"):$PATH"
command -v npm >/dev/null || die "npm not found"

VERSION=$(node -p "require('$ROOT/package.json').version")
# semver pre-releases sort before the release; in Debian versions that is "~"
DEB_VERSION=$(printf '%s' "$VERSION" | sed 's/-/~/')
MAINTAINER=${THEMIS_DEB_MAINTAINER:-Themis maintainers <themis@localhost>}
COMPRESS=${THEMIS_DEB_COMPRESS:-xz}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

WORK=$(mktemp -d "${TMPDIR:-/tmp}/themis-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root
LIB=$STAGE/usr/lib/themis
DOC=$STAGE/usr/share/doc/themis

# --- compile and pack this checkout --------------------------------------------------------------
if [ "${THEMIS_DEB_SKIP_BUILD:-}" != 1 ]; then
    log "npm run build"
    (cd "$ROOT" && npm run build >&2)
fi
log "npm pack (themis-milter and the workspace packages)"
mkdir -p "$WORK/tgz"
# --ignore-scripts: the packages' prepack scripts would compile everything again
(cd "$ROOT" && npm pack --silent --ignore-scripts --pack-destination "$WORK/tgz" --workspaces --include-workspace-root >/dev/null)
ls "$WORK"/tgz/themis-milter-*.tgz >/dev/null 2>&1 || die "npm pack made no themis-milter tarball"

# --- /usr/lib/themis: the packages and their production dependencies ---------------------------
mkdir -p "$LIB"
cat >"$LIB/package.json" <<'EOF'
{ "name": "themis-deb", "private": true, "description": "Themis as installed by the themis .deb" }
EOF
log "npm install --omit=dev (production dependencies)"
(cd "$LIB" && npm install --omit=dev --no-audit --no-fund --ignore-scripts --prefer-offline --loglevel=error \
    "$WORK"/tgz/*.tgz >&2)
# The lock files name the temporary tarballs; the dependencies become plain versions.
rm -f "$LIB/package-lock.json" "$LIB/node_modules/.package-lock.json"
node -e '
const fs = require("node:fs");
const [file, modules] = process.argv.slice(1);
const pkg = JSON.parse(fs.readFileSync(file, "utf8"));
for (const name of Object.keys(pkg.dependencies ?? {})) {
  pkg.dependencies[name] = JSON.parse(fs.readFileSync(`${modules}/${name}/package.json`, "utf8")).version;
}
fs.writeFileSync(file, JSON.stringify(pkg, null, 2) + "\n");
' "$LIB/package.json" "$LIB/node_modules"
[ -f "$LIB/node_modules/themis-milter/bin/themis.js" ] || die "themis-milter is missing from $LIB/node_modules"

# --- the Node.js runtime and its licence ----------------------------------------------------------
install -D -m 0755 "$NODE_BIN" "$LIB/node/bin/node"
NODE_PKG=node-$NODE_PLATFORM-$NODE_ARCH
NODE_LICENSE=
LICENSE_CACHE=$ROOT/node_modules/.cache/themis-deb/$NODE_PKG-$NODE_VERSION-LICENSE
for f in "$(dirname "$NODE_BIN")/../LICENSE" "$LICENSE_CACHE" \
    "$(dirname "$NODE_BIN")/../node_modules/$NODE_PKG/LICENSE" \
    "$ROOT/node_modules/node/node_modules/$NODE_PKG/LICENSE" \
    "$ROOT/node_modules/$NODE_PKG/LICENSE"; do
    if [ -f "$f" ] && grep -q 'Node.js is licensed' "$f"; then NODE_LICENSE=$f; break; fi
done
if [ -z "$NODE_LICENSE" ]; then
    # The `node` npm package deletes its platform package after install: fetch that package
    # (npm's cache first) for the LICENSE of exactly this Node.js version.
    log "fetching the licence of Node.js $NODE_VERSION ($NODE_PKG@$NODE_VERSION)"
    mkdir -p "$WORK/nodepkg"
    (cd "$WORK/nodepkg" && npm pack --silent --prefer-offline "$NODE_PKG@$NODE_VERSION" >/dev/null)
    tar -xzf "$WORK"/nodepkg/*.tgz -C "$WORK/nodepkg" package/LICENSE
    NODE_LICENSE=$WORK/nodepkg/package/LICENSE
    if mkdir -p "$(dirname "$LICENSE_CACHE")" 2>/dev/null; then cp "$NODE_LICENSE" "$LICENSE_CACHE" 2>/dev/null || true; fi
fi
install -m 0644 "$NODE_LICENSE" "$LIB/node/LICENSE"

# --- the command, the unit, the configuration ---------------------------------------------------
install -D -m 0755 "$HERE/themis" "$STAGE/usr/bin/themis"
mkdir -p "$STAGE/lib/systemd/system" "$STAGE/etc/default" "$STAGE/etc/themis"
node "$HERE/adapt.mjs" "$ROOT/contrib/systemd/themis.service" "$ROOT/contrib/systemd/themis.default" \
    "$STAGE/lib/systemd/system/themis.service" "$STAGE/etc/default/themis"
STAGED_THEMIS=("$LIB/node/bin/node" "$LIB/node_modules/themis-milter/bin/themis.js")
"${STAGED_THEMIS[@]}" init --path "$STAGE/etc/themis/themis.config.ts" >/dev/null
# the staged installation must load its own starter configuration, plugins and all
log "themis config check (staged)"
(cd "$STAGE/etc/themis" && "${STAGED_THEMIS[@]}" config check --config "$STAGE/etc/themis/themis.config.ts" >&2) ||
    die "the staged Themis rejects its starter configuration"
[ "$("${STAGED_THEMIS[@]}" --version)" = "$VERSION" ] || die "the staged themis --version is not $VERSION"

# --- documentation ----------------------------------------------------------------------------------
mkdir -p "$DOC"
install -m 0644 "$ROOT/README.md" "$DOC/README.md"
cat >"$DOC/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: themis-milter

Files: *
License: MIT

Files: usr/lib/themis/node_modules/*
Comment: Themis's npm packages and their production dependencies; each package's licence is in
 its directory under /usr/lib/themis/node_modules/ (the "license" field of its package.json and
 its LICENSE file).
License: various, see the packages

Files: usr/lib/themis/node/*
Comment: The official Node.js $NODE_VERSION binary for $NODE_PLATFORM-$NODE_ARCH.
License: MIT and others, see /usr/lib/themis/node/LICENSE

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy of this software
 and associated documentation files (the "Software"), to deal in the Software without
 restriction, including without limitation the rights to use, copy, modify, merge, publish,
 distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
 Software is furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all copies or
 substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
 BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
 NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
 DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
EOF
{
    printf 'themis (%s) unstable; urgency=medium\n\n' "$DEB_VERSION"
    printf '  * Built from themis-milter %s with Node.js %s.\n\n' "$VERSION" "$NODE_VERSION"
    printf ' -- %s  %s\n' "$MAINTAINER" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$DOC/changelog.Debian.gz"

# --- DEBIAN/ ------------------------------------------------------------------------------------------
mkdir -p "$STAGE/DEBIAN"
install -m 0755 "$HERE/postinst" "$HERE/prerm" "$HERE/postrm" "$STAGE/DEBIAN/"
printf '%s\n' /etc/default/themis /etc/themis/themis.config.ts >"$STAGE/DEBIAN/conffiles"
# Normalise modes (npm leaves what the tarballs had): directories 0755, files 0644 or 0755.
find "$STAGE" -type d -exec chmod 0755 {} +
chmod -R u+rw,go+r,go-w "$STAGE"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/md5sums" "$STAGE/DEBIAN/conffiles"
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
HOMEPAGE=$(node -p "(p => (p.homepage ?? (p.repository?.url ?? p.repository ?? '')).replace(/^git\+/, '').replace(/\.git$/, ''))(require('$ROOT/package.json'))")
DESCRIPTION=$(node -p "require('$ROOT/package.json').description")
{
    echo "Package: themis"
    echo "Version: $DEB_VERSION"
    echo "Architecture: $DEB_ARCH"
    echo "Maintainer: $MAINTAINER"
    echo "Installed-Size: $INSTALLED_SIZE"
    # the Node.js binary: glibc >= 2.28, libstdc++ (GLIBCXX_3.4.21, GCC 5), libgcc_s
    echo "Depends: adduser, libc6 (>= 2.28), libgcc-s1, libstdc++6 (>= 5)"
    echo "Suggests: redis-server"
    echo "Enhances: postfix"
    echo "Section: mail"
    echo "Priority: optional"
    [ -n "$HOMEPAGE" ] && echo "Homepage: $HOMEPAGE"
    echo "Description: $DESCRIPTION"
    echo " Themis is a milter daemon for Postfix (and Sendmail) that applies mail policies through"
    echo " plugins: rate limits, SPF, header rules, sender prediction and a monitoring dashboard."
    echo " ."
    echo " This package carries Themis $VERSION, its built-in plugins, their npm dependencies and"
    echo " its own Node.js $NODE_VERSION runtime in /usr/lib/themis. Installing it starts nothing:"
    echo " edit /etc/themis/themis.config.ts and /etc/default/themis, then"
    echo " systemctl enable --now themis."
} >"$STAGE/DEBIAN/control"

DEB=$OUTDIR/themis_${DEB_VERSION}_${DEB_ARCH}.deb
log "dpkg-deb --build ($COMPRESS) -> $DEB"
dpkg-deb --root-owner-group -Z"$COMPRESS" ${THEMIS_DEB_LEVEL:+-z"$THEMIS_DEB_LEVEL"} --build "$STAGE" "$DEB" >&2
echo "$DEB"
