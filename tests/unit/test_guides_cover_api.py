"""Every operation of the OpenAPI description has an executed example in the guides.

``functions/admin/openapi.json`` lists each route (method + path template) the API serves;
``tests/e2e/test_docs.py`` runs every ``bash run`` block of ``docs/guides/*.md`` against the local
stack. This test reads those blocks as a shell would (quotes, ``$( … )``, line continuations,
heredocs) and finds each ``curl`` call to ``$API<path>``: the method is ``-X``/``--request``, else
POST when a body is sent (``-d``, ``--data*``, ``--json``, ``-F``), PUT for ``-T``, HEAD for ``-I``,
else GET. ``expect <status> <curl arguments…>`` (the wrapper defined at the top of
``docs/guides/api-reference.md``) counts as a ``curl`` call. A path parameter matches any segment
except an operation name, which the guides write escaped (``\\$sign``), so an example of
``POST /fhir/Observation/$acknowledge`` never passes for a read of ``/fhir/Observation/{id}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "functions" / "admin" / "openapi.json"
GUIDES = ROOT / "docs" / "guides"
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
# Commands that call curl: how many arguments of their own come before curl's.
CURL_WRAPPERS = {"curl": 0, "expect": 1}
DATA_FLAGS = ("-d", "--data", "--data-binary", "--data-raw", "--data-urlencode", "--json", "-F", "--form")
ESCAPED_DOLLAR = "\\$"  # kept as written: an operation name (\$sign), not a variable
URL = re.compile(r"^\$(?:API\b|\{API\})(?P<path>/[^?#]*)")


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # as written, after shell quoting: "/fhir/Patient/$PATIENT/\\$everything"


# ------------------------------------------------------------------ reading shell ---


class _Lexer:
    """Split bash source into simple commands (lists of words, quotes removed).

    Enough of bash for documentation examples: single and double quotes, backslash escapes and
    line continuations, ``$( … )`` (its commands are commands too), ``$(( … ))``, ``${ … }``,
    comments, heredocs (skipped), and the separators newline ``;`` ``&`` ``|`` ``(`` ``)``.
    """

    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0
        self.commands: list[list[str]] = []
        self.heredocs: list[str] = []

    def run(self) -> list[list[str]]:
        self._commands(closing=None)
        return self.commands

    def _peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.text[j] if j < len(self.text) else ""

    def _commands(self, *, closing: str | None) -> None:
        """Read commands until ``closing`` (``)`` of a ``$(``) or the end."""
        words: list[str] = []
        word: list[str] | None = None

        def end_word() -> None:
            nonlocal word
            if word is not None:
                words.append("".join(word))
                word = None

        def end_command() -> None:
            end_word()
            if words:
                self.commands.append(list(words))
                words.clear()

        while self.i < len(self.text):
            c = self._peek()
            if c == ")" and closing == ")":
                self.i += 1
                end_command()
                return
            if c == "\\" and self._peek(1) == "\n":
                self.i += 2
                continue
            if c in " \t\r":
                end_word()
                self.i += 1
                continue
            if c == "\n":
                end_command()
                self.i += 1
                self._skip_heredocs()
                continue
            if c in ";&|()":
                end_command()
                self.i += 1
                continue
            if c == "#" and word is None:
                while self.i < len(self.text) and self._peek() != "\n":
                    self.i += 1
                continue
            if self.text.startswith("<<<", self.i):  # a here-string: its word follows
                end_word()
                self.i += 3
                continue
            if self.text.startswith("<<", self.i):
                end_word()
                self.i += 2
                self._heredoc_marker()
                continue
            word = word if word is not None else []
            if c == "\\":
                word.append(self._peek(1))
                self.i += 2
            elif c == "'":
                end = self.text.index("'", self.i + 1)
                word.append(self.text[self.i + 1:end])
                self.i = end + 1
            elif c == '"':
                self.i += 1
                word.append(self._double_quoted())
            elif c == "$":
                word.append(self._dollar())
            else:
                word.append(c)
                self.i += 1
        end_command()

    def _double_quoted(self) -> str:
        out: list[str] = []
        while self.i < len(self.text):
            c = self._peek()
            if c == '"':
                self.i += 1
                return "".join(out)
            if c == "\\" and self._peek(1) == "$":
                out.append(ESCAPED_DOLLAR)
                self.i += 2
            elif c == "\\" and self._peek(1) in '"\\`\n':
                out.append("" if self._peek(1) == "\n" else self._peek(1))
                self.i += 2
            elif c == "$":
                out.append(self._dollar())
            else:
                out.append(c)
                self.i += 1
        raise ValueError("unterminated double quote")

    def _dollar(self) -> str:
        """``$…`` at ``self.i``: a command substitution is read as commands; the rest is kept as text."""
        if self.text.startswith("$((", self.i):
            depth, start = 0, self.i
            while self.i < len(self.text):
                depth += {"(": 1, ")": -1}.get(self._peek(), 0)
                self.i += 1
                if depth == 0:
                    break
            return self.text[start:self.i]
        if self.text.startswith("$(", self.i):
            self.i += 2
            self._commands(closing=")")
            return "$(…)"
        if self.text.startswith("${", self.i):
            end = self.text.index("}", self.i)
            text, self.i = self.text[self.i:end + 1], end + 1
            return text
        self.i += 1
        return "$"

    def _heredoc_marker(self) -> None:
        if self._peek() == "-":
            self.i += 1
        while self._peek() in " \t":
            self.i += 1
        match = re.compile(r"""['"]?(\w+)['"]?""").match(self.text, self.i)
        if match is None:
            raise ValueError("heredoc without a delimiter")
        self.heredocs.append(match.group(1))
        self.i = match.end()

    def _skip_heredocs(self) -> None:
        while self.heredocs:
            delimiter = self.heredocs.pop(0)
            while self.i < len(self.text):
                end = self.text.find("\n", self.i)
                line = self.text[self.i:end if end >= 0 else len(self.text)]
                self.i = end + 1 if end >= 0 else len(self.text)
                if line.strip() == delimiter:
                    break


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a bash script, each a list of words with quoting removed."""
    return _Lexer(script).run()


def curl_calls(script: str) -> list[Call]:
    """Every ``curl`` (or wrapper) call to ``$API…`` in ``script``, with its HTTP method."""
    calls: list[Call] = []
    for words in shell_commands(script):
        start = next((i for i, w in enumerate(words) if w in CURL_WRAPPERS), None)
        if start is None:
            continue
        args = words[start + 1 + CURL_WRAPPERS[words[start]]:]
        method = None
        for n, flag in enumerate(args):
            value = args[n + 1] if n + 1 < len(args) else ""
            if flag in ("-X", "--request"):
                method = value.upper()
            elif flag.startswith("-X") and len(flag) > 2:
                method = flag[2:].upper()
        if method is None:
            if any(a in DATA_FLAGS or a.startswith(("--data", "-d")) for a in args):
                method = "POST"
            elif any(a in ("-T", "--upload-file") for a in args):
                method = "PUT"
            elif any(a in ("-I", "--head") for a in args):
                method = "HEAD"
            else:
                method = "GET"
        calls += [Call(method, m["path"]) for a in args if (m := URL.match(a))]
    return calls


def guide_scripts(folder: Path = GUIDES) -> dict[str, str]:
    """Each guide's ``bash run`` blocks, joined as ``tests/e2e/test_docs.py`` runs them."""
    return {path.name: "\n".join(m["body"] for m in FENCE.finditer(path.read_text(encoding="utf-8"))
                                 if m["info"].strip() == "bash run")
            for path in sorted(folder.glob("*.md"))}


# ------------------------------------------------------------------ matching ---


def operations(document: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation of the OpenAPI description."""
    paths = (document or json.loads(OPENAPI.read_text(encoding="utf-8")))["paths"]
    return sorted((method.upper(), path) for path, item in paths.items() for method in item if method in METHODS)


def template_pattern(template: str) -> re.Pattern[str]:
    """A regular expression for the paths a template covers: a parameter is one segment, never an
    escaped operation name; a literal ``$name`` must be written ``\\$name``."""
    parts = []
    for segment in template.strip("/").split("/"):
        if re.fullmatch(r"\{[^}]+\}", segment):
            parts.append(r"(?!\\\$)[^/]+")
        else:
            parts.append(re.escape(segment.replace("$", ESCAPED_DOLLAR)))
    return re.compile("/" + "/".join(parts) + "/?")


def uncovered(ops: list[tuple[str, str]], calls: list[Call]) -> list[str]:
    """The operations no call exercises, as ``METHOD /path``."""
    missing = []
    for method, template in ops:
        pattern = template_pattern(template)
        if not any(c.method == method and pattern.fullmatch(c.path) for c in calls):
            missing.append(f"{method} {template}")
    return missing


# ------------------------------------------------------------------ tests ---


def _all_calls() -> list[Call]:
    return [call for script in guide_scripts().values() for call in curl_calls(script)]


def test_every_openapi_operation_has_an_executed_example_in_the_guides() -> None:
    ops = operations()
    assert len(ops) > 100, "the OpenAPI description lost its operations"
    missing = uncovered(ops, _all_calls())
    assert missing == [], (f"{len(missing)} of {len(ops)} operations have no `bash run` example in docs/guides "
                           f"(add one to docs/guides/api-reference.md):\n" + "\n".join(missing))


def test_an_operation_without_an_example_is_reported() -> None:
    document: dict[str, Any] = {"paths": {
        "/fhir/Patient/{patient_id}": {"get": {}, "delete": {}},
        "/fhir/Observation/$lastn": {"get": {}},
        "/fhir/Observation/{resource_id}/$acknowledge": {"post": {}},
    }}
    script = """
TOKEN=$(.venv/bin/python -m local.token actopan.physician)
status=$(curl -s -o out.json -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \\
  "$API/fhir/Patient/$PATIENT")
curl -s -f -H "$AUTH" "$API/fhir/Observation/\\$lastn?patient=$PATIENT"
"""
    assert uncovered(operations(document), curl_calls(script)) == [
        "DELETE /fhir/Patient/{patient_id}", "POST /fhir/Observation/{resource_id}/$acknowledge"]


def test_an_operation_name_is_not_taken_for_a_path_parameter() -> None:
    calls = curl_calls('curl -s -f -H "$AUTH" "$API/fhir/Observation/\\$lastn?patient=$P"')
    assert uncovered([("GET", "/fhir/Observation/{resource_id}")], calls) == ["GET /fhir/Observation/{resource_id}"]
    assert uncovered([("GET", "/fhir/Observation/$lastn")], calls) == []


@pytest.mark.parametrize(("command", "expected"), [
    ('curl -s -f "$API/fhir/metadata"', Call("GET", "/fhir/metadata")),
    ("curl -s -f -H \"$AUTH\" -X PUT \"$API/fhir/Patient/$PATIENT\" --data @patient.json",
     Call("PUT", "/fhir/Patient/$PATIENT")),
    ("curl -s -H \"$LAB\" --data-binary @oru.hl7 \"$API/hl7v2\"", Call("POST", "/hl7v2")),
    ("test \"$(curl -s -o /dev/null -w '%{http_code}' -H 'If-Match: W/\"1\"' \\\n"
     "  -X POST \"$API/fhir/MedicationRequest/$RX/\\$sign\" -d '{\"resourceType\": \"Parameters\"}')\" = 409",
     Call("POST", "/fhir/MedicationRequest/$RX/\\$sign")),
    ("expect 405 -X DELETE -H \"$AUTH\" \"$API/fhir/Condition/$CONDITION\"",
     Call("DELETE", "/fhir/Condition/$CONDITION")),
    ("ID=$(expect 201 -H \"$AUTH\" \"${API}/fhir/Encounter\" -d '{\n  \"resourceType\": \"Encounter\"}' | jq -r .id)",
     Call("POST", "/fhir/Encounter")),
])
def test_curl_calls_are_read_as_bash_reads_them(command: str, expected: Call) -> None:
    assert curl_calls(command) == [expected]


def test_heredocs_and_comments_are_not_calls() -> None:
    script = """python3 - <<'EOF'
print("curl -X DELETE $API/fhir/Patient/x")
EOF
# curl -X DELETE "$API/fhir/Patient/y"
curl -s "$API/fhir/metadata"
"""
    assert curl_calls(script) == [Call("GET", "/fhir/metadata")]


def test_dropping_an_example_from_the_real_guides_is_reported() -> None:
    scripts = guide_scripts()
    without_hide = {name: "\n".join(line for line in script.splitlines() if "\\$hide" not in line)
                    for name, script in scripts.items()}
    calls = [call for script in without_hide.values() for call in curl_calls(script)]
    assert uncovered(operations(), calls) == ["POST /fhir/Medication/{resource_id}/$hide"]
