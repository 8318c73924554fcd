"""Writes the python blocks of README.md's quick start (the section "Usage, next to PyTorch",
up to the next "## " heading) to stdout as one plain script, in order: `python
readme_quickstart.py README.md > quickstart.py && python quickstart.py` runs them as a user
would paste them, outside pytest."""
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
start = text.index("\n## Usage, next to PyTorch")
end = text.index("\n## ", start + 1)
blocks = re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text[start:end], re.M | re.S)
if not blocks:
    sys.exit("README.md: no python blocks in its quick start")
print("\n".join(blocks))
