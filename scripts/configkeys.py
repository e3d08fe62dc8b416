"""The configuration the services read, taken from the code, and the tables of the README and docs/configuration.md
that document it.

Used by scripts/check-config (README against code) and scripts/check-compose (docker-compose.yml against code).
Keys are read with swift-configuration (`reader.int(forKey: "dispatch.maxInFlight", default: 64)`); its
environment provider turns `dispatch.maxInFlight` into `DISPATCH_MAX_IN_FLIGHT`.
"""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANNELS = ["whatsapp", "telegram", "wechat"]
SCRIPT_PREFIX = "BANDITORE_"  # read by the scripts (scripts/lib.sh, scripts/demo), not by the services

READ = re.compile(
    r'reader\.(string|int|double|bool)\(\s*forKey:\s*(?:"([^"]+)"|ConfigKey\("([^"]+)"\))'
    r'(?:\s*,\s*isSecret:\s*\w+)?(?:\s*,\s*default:\s*([^\n]*?))?\s*\)',
    re.S,
)


def environment_name(key):
    """`sim.faults.errorRate` → `SIM_FAULTS_ERROR_RATE`."""
    words = []
    for part in key.split("."):
        words.append(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", part).upper())
    return "_".join(words)


def literal(expression):
    """The value of a default that is a literal (`64`, `10_000`, `256 * 1024`, `"json"`, `true`), else None."""
    if expression is None:
        return None
    expression = expression.strip()
    if re.fullmatch(r'"[^"\\]*"', expression):
        return expression[1:-1]
    if expression in ("true", "false"):
        return expression
    if re.fullmatch(r"[0-9_.]+(\s*\*\s*[0-9_.]+)*", expression):
        value = 1.0
        for factor in expression.split("*"):
            value *= float(factor.replace("_", ""))
        return format_number(value)
    return None


def format_number(value):
    return str(int(value)) if float(value).is_integer() else str(value)


def expand(key):
    """Keys built at run time: `\\(channel.rawValue).apiUrl`, `\\(key).errorRate` (key = `sim.<channel>`)."""
    key = key.replace("\\(key)", "sim.\\(channel.rawValue)")
    if "\\(channel.rawValue)" not in key:
        return [key]
    keys = [key.replace("\\(channel.rawValue)", channel) for channel in CHANNELS]
    return [k.replace("\\(rateKey)", "callsPerSecond" if ".wechat." in k else "messagesPerSecond") for k in keys]


def resolve(expression, text):
    """A default that names a stored property (`recordLimit`, `b.whatsappPairBurst`) initialised with a literal
    in the same file (`public var recordLimit = 1_000_000`), else the default itself."""
    if expression and re.fullmatch(r"(\w+\.)?\w+", expression.strip()):
        name = expression.strip().split(".")[-1]
        match = re.search(rf"\bvar {name}(?:: *[\w?]+)? *= *([^\n]+)", text)
        if match:
            return match.group(1)
    return expression


def read_by_code():
    """{VARIABLE: {"files": set of paths, "defaults": set of literal defaults (None when not literal)}}."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "Sources/**/*.swift"), recursive=True)):
        text = open(path, encoding="utf-8").read()
        for kind, plain, built, default in READ.findall(text):
            for key in expand(plain or built):
                entry = found.setdefault(environment_name(key), {"files": set(), "defaults": set()})
                entry["files"].add(os.path.relpath(path, ROOT))
                entry["defaults"].add(literal(resolve(default, text)) if default else None)
    return found


# Where the configuration tables live: the README (what every service reads) and docs/configuration.md (the rest).
DOCUMENTS = ["README.md", os.path.join("docs", "configuration.md")]


def documented_in_readme():
    """[("file:line", [VARIABLE, …], default cell)] of the `| variable | default | … |` tables of DOCUMENTS."""
    rows = []
    for document in DOCUMENTS:
        rows += _documented_in(document)
    return rows


def _documented_in(document):
    rows = []
    for number, line in enumerate(open(os.path.join(ROOT, document), encoding="utf-8"), 1):
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        names = re.findall(r"`([A-Z_<>][A-Z0-9_<>]*)`", cells[0])
        if not names or not all(re.fullmatch(r"[A-Z_<>][A-Z0-9_<>]*", n) for n in names):
            continue
        variables = []
        prefix = ""  # `SIM_<CHANNEL>_ERROR_RATE`, `_TIMEOUT_RATE`: the second is `SIM_<CHANNEL>_TIMEOUT_RATE`
        for name in names:
            if name.startswith("_"):
                name = prefix + name
            elif "<CHANNEL>" in name:
                prefix = name[: name.index("<CHANNEL>") + len("<CHANNEL>")]
            if "<CHANNEL>" in name:
                variables += [name.replace("<CHANNEL>", channel.upper()) for channel in CHANNELS]
            else:
                variables.append(name)
        rows.append((f"{document}:{number}", variables, cells[1]))
    return rows
