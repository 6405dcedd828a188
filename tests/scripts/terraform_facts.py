"""Parses every .tf under a folder with python-hcl2 and prints, as JSON,
what the tests check: each variable's and output's description and type,
each module call's string arguments, and each checkov skip's reason."""
import json
import pathlib
import re
import sys

import hcl2

def one(v):
    """python-hcl2 wraps some attribute values in one-element lists."""
    while isinstance(v, list) and len(v) == 1:
        v = v[0]
    return v


root = pathlib.Path(sys.argv[1])
facts = {"files": [], "variables": [], "outputs": [], "modules": {}, "skips": []}
for path in sorted(root.rglob("*.tf")):
    rel = str(path.relative_to(root))
    text = path.read_text()
    with path.open() as f:
        doc = hcl2.load(f)
    facts["files"].append(rel)
    for block in doc.get("variable", []):
        for name, body in block.items():
            facts["variables"].append({
                "file": rel, "name": name,
                "description": one(body.get("description", "")),
                "type": str(one(body.get("type", ""))),
                "validation": bool(body.get("validation")),
            })
    for block in doc.get("output", []):
        for name, body in block.items():
            facts["outputs"].append({"file": rel, "name": name, "description": one(body.get("description", ""))})
    for block in doc.get("module", []):
        for name, body in block.items():
            facts["modules"][name] = {k: one(v) for k, v in body.items() if isinstance(one(v), str)}
    for locals_block in doc.get("locals", []):
        for name, value in locals_block.items():
            value = one(value)
            if isinstance(value, str):
                facts["modules"].setdefault("locals", {})[name] = value
    for m in re.finditer(r"#checkov:skip=([A-Z0-9_]+)(:?)(.*)", text):
        facts["skips"].append({"file": rel, "check": m.group(1), "reason": m.group(3).strip() if m.group(2) else ""})
print(json.dumps(facts))
