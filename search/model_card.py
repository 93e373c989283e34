"""model_card.md: what an extracted model (or family) is, what it scores and how it was made."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.core.atomic import atomic_write_text
from nas.search_space import Arch

from .extract import Extracted

MODEL_CARD = "model_card.md"


def write_model_card(
    out: Path,
    items: Sequence[Extracted],
    provenance: dict[str, Any],
    files: Sequence[str],
    family: dict[str, Any] | None = None,
) -> Path:
    """Write out/model_card.md for one model (`family` None) or a family's members.

    `provenance` holds "extract_command", and where known "search_command", "search_run",
    "supernet", "supernet_digest", "profile", "budget_ms"; `family` holds the artifact's
    sizes ("union_params", "sum_params", "union_bytes", "sum_bytes") and "finetune_steps".
    """
    lines = [f"# Model card: {_title(items, family)}", ""]
    lines += _made_by(provenance)
    if family is not None:
        lines += _family_section(items, family)
    for item in items:
        lines += _model_section(item, heading=family is not None)
    lines += ["## Files", ""] + [f"- `{name}`" for name in files] + [""]
    lines += _loading(items, family)
    path = out / MODEL_CARD
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _title(items: Sequence[Extracted], family: dict[str, Any] | None) -> str:
    if family is None:
        return f"arch {items[0].arch.id}"
    return f"family of {len(items)} ({', '.join(i.name for i in items)})"


def _made_by(p: dict[str, Any]) -> list[str]:
    lines = ["## How it was made", ""]
    if p.get("search_command"):
        lines.append(f"- Searched by `{p['search_command']}` (run `{p.get('search_run', '')}`).")
    if p.get("supernet"):
        digest = p.get("supernet_digest", "")
        lines.append(f"- Supernet `{p['supernet']}` (digest `{digest[:16]}`).")
    if p.get("profile"):
        lines.append(f"- Latency profile `{p['profile']}`.")
    lines.append(f"- Extracted by `{p['extract_command']}`.")
    return [*lines, ""]


def _family_section(items: Sequence[Extracted], family: dict[str, Any]) -> list[str]:
    lines = ["## Family", ""]
    lines.append(
        f"{len(items)} members share one set of nested weights, stored once: "
        f"{family['union_params']:,} parameters ({_mb(family['union_bytes'])}) against "
        f"{family['sum_params']:,} ({_mb(family['sum_bytes'])}) for the members saved apart "
        f"({family['union_bytes'] / family['sum_bytes']:.2f}x)."
    )
    if family.get("finetune_steps"):
        lines.append(
            f"The shared weights were fine-tuned {family['finetune_steps']} steps on all members "
            "together; each member's loss before and after is below."
        )
    lines += ["", "| member | arch | params | val loss | predicted ms | measured ms |"]
    lines.append("|---|---|---|---|---|---|")
    for item in items:
        i = item.info
        lines.append(
            f"| {item.name} | {item.arch.id} | {i['params']:,} | {_f(i.get('val_loss'), 4)} | "
            f"{_f(i.get('predicted_ms'), 3)} | {_f(i.get('measured_ms'), 3)} |"
        )
    return [*lines, ""]


def _model_section(item: Extracted, heading: bool) -> list[str]:
    i = item.info
    lines = [f"## Member {item.name}" if heading else "## The model", ""]
    lines += ["| | |", "|---|---|"]
    lines.append(f"| arch | `{item.arch.id}`: {_layers(item.arch)} |")
    lines.append(f"| parameters | {i['params']:,} |")
    lines.append(f"| FLOPs per forward ({i.get('workload', '')}) | {i['flops'] / 1e6:,.1f} M |")
    loss = i.get("val_loss")
    if loss is not None:
        lines.append(
            f"| validation loss | {loss:.4f} nats/token (perplexity {math.exp(loss):.2f}) on "
            f"{i.get('val_tokens', 0):,} tokens of the search's validation batches |"
        )
    for key, label in (("loss_before_finetune", "before"), ("loss_after_finetune", "after")):
        if i.get(key) is not None:
            lines.append(f"| validation loss {label} the family fine-tune | {i[key]:.4f} |")
    lines.append(f"| weights | {item.weights} |")
    lines.append(f"| predicted latency | {_ms(i.get('predicted_ms'))} |")
    if i.get("search_measured_ms") is not None:
        lines.append(f"| measured by the search | {_ms(i['search_measured_ms'])} |")
    if i.get("measured_ms") is not None:
        spread = i.get("measured_rel_iqr")
        note = f" (IQR/median {spread:.1%})" if spread is not None else ""
        lines.append(f"| measured at extraction, this host | {_ms(i['measured_ms'])}{note} |")
    lines += ["", "```json", json.dumps(item.arch.to_dict(), indent=2, sort_keys=True), "```", ""]
    return lines


def _loading(items: Sequence[Extracted], family: dict[str, Any] | None) -> list[str]:
    lines = ["## Loading", "", "```python", "import nas", ""]
    if family is None:
        lines.append('model = nas.load("THIS_FOLDER")  # a plain torch.nn.Module')
    else:
        lines.append('model = nas.load("THIS_FOLDER", budget="10ms")  # the best member that fits')
        lines.append(f'model = nas.load("THIS_FOLDER", member="{items[0].name}")')
    lines += ["logits = model(tokens)  # (B, T) int64 -> (B, T, vocab)", "```", ""]
    return lines


def _layers(arch: Arch) -> str:
    parts = []
    for layer in arch.layers:
        bits = [layer.mixer]
        if layer.heads:
            bits.append(f"h{layer.heads}")
        if layer.window:
            bits.append(f"w{layer.window}")
        bits.append(f"ffn{layer.ffn}")
        parts.append("/".join(bits))
    return f"d{arch.d_model}, {arch.depth} layers: " + ", ".join(parts)


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "not predicted (no profile)" if value is None else f"{value:.3f} ms"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"
