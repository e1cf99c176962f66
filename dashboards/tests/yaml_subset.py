"""A small YAML reader for the configuration files shipped in dashboards/.

Why not PyYAML: the test virtualenv holds only pinned test tools, and these
files use a small part of YAML. This reader accepts block mappings, block
sequences (including "- key: value" items), plain / single / double quoted
scalars, flow mappings and sequences of scalars ("{ a: b }", "[a, b]"),
block scalars ("|", ">") and comments, and raises ValueError on anything
else, so a file that drifts outside the subset fails loudly instead of
being misread.
"""

import json
import re

_KEY = re.compile(r"^([A-Za-z0-9_.\-/]+|\"[^\"]*\"|'[^']*'):(?:\s+|$)(.*)$")


def _strip_comment(s):
    out, quote = [], None
    for i, ch in enumerate(s):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'" and (i == 0 or s[i - 1] in " \t:[{,"):
            quote = ch
        elif ch == "#" and (i == 0 or s[i - 1] in " \t"):
            break
        out.append(ch)
    return "".join(out).rstrip()


def _scalar(s):
    s = s.strip()
    if s == "" or s in ("~", "null"):
        return None
    if s.startswith('"'):
        if not s.endswith('"') or len(s) < 2:
            raise ValueError(f"unterminated string: {s}")
        return json.loads(s)
    if s.startswith("'"):
        if not s.endswith("'") or len(s) < 2:
            raise ValueError(f"unterminated string: {s}")
        return s[1:-1].replace("''", "'")
    if s.startswith("{"):
        if not s.endswith("}"):
            raise ValueError(f"unterminated flow mapping: {s}")
        out = {}
        for part in _split_flow(s[1:-1]):
            k, sep, v = part.partition(":")
            if not sep:
                raise ValueError(f"bad flow mapping entry: {part}")
            out[_scalar(k)] = _scalar(v)
        return out
    if s.startswith("["):
        if not s.endswith("]"):
            raise ValueError(f"unterminated flow sequence: {s}")
        return [_scalar(p) for p in _split_flow(s[1:-1])]
    if s in ("true", "True"):
        return True
    if s in ("false", "False"):
        return False
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    if re.fullmatch(r"-?\d+\.\d*", s):
        return float(s)
    return s


def _split_flow(s):
    parts, depth, cur, quote = [], 0, [], None
    for ch in s:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return [p.strip() for p in parts]


def loads(text):
    raw = text.split("\n")
    lines = []  # (indent, content, raw line index)
    for i, line in enumerate(raw):
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise ValueError(f"line {i + 1}: tab indentation")
        c = _strip_comment(line)
        if c.strip() in ("", "---"):
            continue
        lines.append((len(c) - len(c.lstrip()), c.strip(), i))
    pos = 0

    def block_scalar(indent_of_parent, style, raw_index):
        nonlocal pos
        body = []
        j = raw_index + 1
        ind = None
        while j < len(raw):
            line = raw[j]
            if line.strip() == "":
                body.append("")
                j += 1
                continue
            cur = len(line) - len(line.lstrip())
            if cur <= indent_of_parent:
                break
            ind = cur if ind is None else ind
            body.append(line[ind:])
            j += 1
        while pos < len(lines) and lines[pos][2] < j:
            pos += 1
        while body and body[-1] == "":
            body.pop()
        return ("\n" if style.startswith("|") else " ").join(body) + "\n"

    def value_after(indent, rest, raw_index):
        nonlocal pos
        if rest in ("|", "|-", ">", ">-"):
            return block_scalar(indent, rest, raw_index)
        if rest == "":
            if pos < len(lines) and (lines[pos][0] > indent or (lines[pos][0] == indent and lines[pos][1].startswith("- "))):
                return node(lines[pos][0])
            return None
        return _scalar(rest)

    def node(indent):
        nonlocal pos
        if lines[pos][1].startswith("- ") or lines[pos][1] == "-":
            out = []
            while pos < len(lines) and lines[pos][0] == indent and (lines[pos][1].startswith("- ") or lines[pos][1] == "-"):
                _, content, ri = lines[pos]
                item = content[1:].strip()
                if item == "":
                    pos += 1
                    out.append(node(lines[pos][0]))
                elif _KEY.match(item):
                    # "- key: value" starts a mapping indented at the item.
                    lines[pos] = (indent + 2, item, ri)
                    out.append(node(indent + 2))
                else:
                    pos += 1
                    out.append(_scalar(item))
            return out
        out = {}
        while pos < len(lines) and lines[pos][0] == indent:
            _, content, ri = lines[pos]
            m = _KEY.match(content)
            if not m:
                raise ValueError(f"line {ri + 1}: expected 'key: value', got {content!r}")
            key = _scalar(m.group(1))
            if key in out:
                raise ValueError(f"line {ri + 1}: duplicate key {key!r}")
            pos += 1
            out[key] = value_after(indent, m.group(2).strip(), ri)
        if pos < len(lines) and lines[pos][0] > indent:
            raise ValueError(f"line {lines[pos][2] + 1}: unexpected indentation")
        return out

    if not lines:
        return None
    result = node(lines[0][0])
    if pos != len(lines):
        raise ValueError(f"line {lines[pos][2] + 1}: unexpected content")
    return result


def load(path):
    with open(path, encoding="utf-8") as f:
        return loads(f.read())
