"""HTML tables of generated samples: easier to read than printed dictionaries."""

from __future__ import annotations

import html

from IPython.display import HTML

_STYLE = ("<style>.rk td,.rk th{text-align:left;vertical-align:top;padding:4px 8px;"
          "border-bottom:1px solid #ddd;white-space:pre-wrap;max-width:32em}</style>")


def _instruction(prompt: str) -> str:
    """The instruction line of a course prompt, or the prompt itself."""
    lines = [line for line in prompt.splitlines() if line and not line.startswith("###")]
    return lines[0] if lines else prompt


def _table(header: list[str], rows: list[list[str]]) -> HTML:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return HTML(f"{_STYLE}<table class='rk'><tr>{head}</tr>{body}</table>")


def _response_cell(sample: dict) -> str:
    mark = "✓" if sample.get("format_ok") else "✗ format"
    return f"{html.escape(sample['response'])}<br><small>gold {sample['gold']:+.2f} · {mark}</small>"


def sample_table(samples: list[dict], n: int = 5) -> HTML:
    """Instruction | response (with its gold reward and whether it follows the format), first `n` samples."""
    return _table(["instruction", "response"],
                  [[html.escape(_instruction(s["prompt"])), _response_cell(s)] for s in samples[:n]])


def side_by_side(results: dict[str, dict], n: int = 5) -> HTML:
    """One row per instruction, one column per model: `results` maps a name to `score_policy`'s output."""
    names = list(results)
    rows = []
    for i in range(min(n, len(results[names[0]]["samples"]))):
        prompt = results[names[0]]["samples"][i]["prompt"]
        rows.append([html.escape(_instruction(prompt))] + [_response_cell(results[m]["samples"][i]) for m in names])
    return _table(["instruction"] + names, rows)


def summary_table(results: dict[str, dict]) -> HTML:
    """model | mean gold reward | format-following rate."""
    return _table(["model", "mean gold reward", "follows the format"],
                  [[html.escape(name), f"{r['gold']:+.2f}", f"{r['format_rate']:.0%}"]
                   for name, r in results.items()])
