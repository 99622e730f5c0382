#!/bin/sh
# Dev Container Feature "kandan-runner": puts the static kandan-runner binary
# for this container's architecture in /usr/local/bin and adds nothing else
# to the image (no packages, no users, no service). The options arrive as
# ARCHIVEURL, ARCHIVEFILE and SHA256 (containers.dev feature spec).
set -eu

ARCHIVEURL="${ARCHIVEURL:-}"
ARCHIVEFILE="${ARCHIVEFILE:-}"
SHA256="${SHA256:-}"
DEST=/usr/local/bin/kandan-runner

fail() {
	echo "kandan-runner feature: $*" >&2
	exit 1
}

case "$(uname -m)" in
x86_64 | amd64) arch=x86_64 ;;
aarch64 | arm64) arch=aarch64 ;;
*) fail "no kandan-runner build for $(uname -m) (x86_64 and aarch64 only)" ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
archive="$work/archive.tar.gz"

if [ -n "$ARCHIVEFILE" ]; then
	src=$(printf '%s' "$ARCHIVEFILE" | sed "s/{arch}/$arch/g")
	case "$src" in
	/*) ;;
	*) src="$(dirname "$0")/$src" ;;
	esac
	[ -f "$src" ] || fail "archiveFile $src: no such file"
	cp "$src" "$archive"
elif [ -n "$ARCHIVEURL" ]; then
	url=$(printf '%s' "$ARCHIVEURL" | sed "s/{arch}/$arch/g")
	if command -v curl >/dev/null 2>&1; then
		curl -fsSL -o "$archive" "$url" || fail "cannot download $url"
	elif command -v wget >/dev/null 2>&1; then
		wget -q -O "$archive" "$url" || fail "cannot download $url"
	else
		# Installing curl would add to the image: say what is missing instead.
		fail "neither curl nor wget is in the image to download $url (add one first, or use archiveFile)"
	fi
else
	fail "set the archiveUrl option (or archiveFile) to a kandan-runner release archive"
fi

if [ -n "$SHA256" ]; then
	case "$SHA256" in
	*:*) want=$(printf '%s\n' "$SHA256" | tr ', ' '\n\n' | sed -n "s/^$arch://p") ;;
	*) want=$SHA256 ;;
	esac
	[ -n "$want" ] || fail "sha256 names no sum for $arch"
	got=$(sha256sum "$archive" | cut -d' ' -f1)
	[ "$got" = "$want" ] || fail "the archive's sha256 is $got, not $want: refusing it"
fi

tar -xzf "$archive" -C "$work"
# The archive's folder names its target: take the binary for this arch only.
set -- "$work"/kandan-runner-*-"$arch"-unknown-linux-*/kandan-runner
[ -f "$1" ] || fail "the archive holds no kandan-runner for $arch-unknown-linux (wrong archive?)"
mkdir -p "$(dirname "$DEST")"
cp "$1" "$DEST.new"
chmod 0755 "$DEST.new"
mv -f "$DEST.new" "$DEST"
"$DEST" --version
