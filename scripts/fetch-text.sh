#!/usr/bin/env bash
# Real English text for sweeps that must not depend on the internet at training time: Debian
# packages (fetched with apt-get download; nothing is installed) unpacked into plain .txt files
# under DIR (default data/text), one file per source document. See
# ../shared/reference/data-sources.md for what each holds and its licence.
#
#   scripts/fetch-text.sh data/text                 # prose: anarchism, jargon-text, perl-doc, python doc
#   PACKAGES="anarchism jargon-text" scripts/fetch-text.sh data/text
#
# configs/vocab.toml reads DIR as `general = { type = "files", paths = ["data/text"] }`.
set -euo pipefail
out="${1:-data/text}"
python_doc="$(apt-cache search --names-only '^python3\.[0-9]+-doc$' 2>/dev/null | sort -V | tail -1 | cut -d' ' -f1)"
packages="${PACKAGES:-anarchism jargon-text perl-doc ${python_doc}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
for p in $packages; do
  echo "fetching $p" >&2
  apt-get download "$p" >/dev/null 2>&1 || { echo "warning: apt-get download $p failed; skipped" >&2; continue; }
  mkdir -p "x/$p"
  dpkg -x "$p"_*.deb "x/$p"
done
# HTML pages to text (tags dropped, entities decoded), gzipped text and info files unpacked,
# Perl's POD as is. One output file per input document.
python3 - "$work/x" "$out" <<'PY'
import gzip, html, html.parser, pathlib, re, sys

src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])

class Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip = [], 0
    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        if tag in ("p", "br", "div", "li", "h1", "h2", "h3", "h4", "tr"):
            self.parts.append("\n")
    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip -= 1
    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)

def clean(text):
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip() + "\n"

count = 0
for path in sorted(src.rglob("*")):
    if not path.is_file():
        continue
    package = path.relative_to(src).parts[0]
    name = path.name
    if "/doc/" not in str(path) and not name.endswith((".pod", ".info.gz")):
        continue
    if name.endswith(".html"):
        if path.with_name(name[:-5] + ".txt.gz").exists():
            continue  # the package ships the same text as plain text too
        parser = Text()
        parser.feed(path.read_text(errors="replace"))
        text = "".join(parser.parts)
    elif name.endswith((".txt.gz", ".info.gz")) or re.search(r"\.info-\d+\.gz$", name):
        text = gzip.open(path, "rt", errors="replace").read()
    elif name.endswith(".pod"):
        text = path.read_text(errors="replace")
    else:
        continue
    text = clean(text)
    if len(text) < 200:
        continue
    dest = out / f"{package}--{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.txt"
    dest.write_text(text)
    count += 1
print(f"wrote {count} files to {out}", file=sys.stderr)
PY
du -sh "$out" >&2
