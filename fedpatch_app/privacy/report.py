"""audit.md: the audit's table, read by a person."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(block: dict) -> str:
    ci = block.get("membership_auc_ci95")
    return f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


def _mode_rows(modes: dict[str, dict]) -> list[str]:
    lines = [
        "| mode | reconstruction PSNR (SSIM) | public baseline PSNR (SSIM) | above baseline | "
        "membership AUC [95 % interval] | image AUROC | AUC-sPRO@0.3 | AUROC cost | holds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in modes.items():
        lines.append(
            f"| {name} | {_f(m['reconstruction_psnr'], 2)} dB ({_f(m['reconstruction_ssim'])}) "
            f"| {_f(m['baseline_psnr'], 2)} dB ({_f(m['baseline_ssim'])}) "
            f"| {m['psnr_above_baseline']:+.2f} dB | {_f(m['membership_auc'])}{_ci(m)} "
            f"| {_f(m['image_auroc'], 4)} | {_f(m['auc_spro_0.3'], 4)} "
            f"| {_f(m.get('image_auroc_cost'), 4)} | {_f(m.get('holds', '-'))} |"
        )
    return lines


def _attack_rows(modes: dict[str, dict]) -> list[str]:
    lines = [
        "| mode | attack | reconstruction PSNR | SSIM | membership AUC |",
        "|---|---|---|---|---|",
    ]
    for name, m in modes.items():
        for attack, a in m["attacks"].items():
            lines.append(
                f"| {name} | {attack} | {_f(a.get('reconstruction_psnr'), 2)} "
                f"| {_f(a.get('reconstruction_ssim'))} | {_f(a['membership_auc'])}{_ci(a)} |"
            )
    return lines


def _curious_rows(modes: dict[str, dict]) -> list[str]:
    lines = [
        "| mode | rows of others seen | reconstruction PSNR | public baseline PSNR | "
        "membership AUC |",
        "|---|---|---|---|---|",
    ]
    for name, m in modes.items():
        c = m["curious_client"]
        lines.append(
            f"| {name} | {c['rows_seen']} | {_f(c.get('reconstruction_psnr'), 2)} "
            f"| {_f(c.get('baseline_psnr'), 2)} | {_f(c.get('membership_auc'))}{_ci(c)} |"
        )
    return lines


def write_markdown(result: dict[str, Any], path: Path) -> Path:
    modes = result["modes"]
    verdict = result["verdict"]
    s = result["settings"]
    curious = next(iter(modes.values()))["curious_client"].get("client", "-")
    lines = [
        "# Privacy audit",
        "",
        f"Data: `{s['data_root']}` ({', '.join(s['categories'] or ['all categories'])}), "
        f"{s['partition']} partition, {s['num_clients']} clients; features "
        f"{result['feature_spec']['backbone']} ({result['feature_spec']['weights']}), "
        f"{result['feature_spec']['image_size']} px. Attacker's public images: "
        f"{result['public']['images']} photographs, {result['public']['crops']} crops; "
        f"inversion model trained on {result['inversion']['pairs']} public pairs "
        f"(public MSE {result['inversion']['public_mse']}). {result['seconds']} s.",
        "",
        "## The curious server",
        "",
        *_mode_rows(modes),
        "",
    ]
    if verdict.get("attack_strong_enough") is False:
        lines += [f"**{verdict['message']}**", ""]
    holding = verdict["holding"]
    lines += [
        "Protections that hold (reconstruction within 1 dB of the public baseline, "
        "membership AUC <= 0.6, image AUROC cost <= 0.02): "
        + (", ".join(holding) if holding else "none"),
        "",
        "## Every attack",
        "",
        *_attack_rows(modes),
        "",
        f"## The curious client (partition {curious})",
        "",
        *_curious_rows(modes),
        "",
        "## What each attacker holds",
        "",
        *[f"- **{name}**: {m['what_the_server_sees']}" for name, m in modes.items()],
        "",
        "Pictures: "
        + ", ".join(f"[{n}](figures/{n}.png)" for n in modes if not n.startswith("dp")),
        "",
    ]
    path.write_text("\n".join(lines))
    return path
