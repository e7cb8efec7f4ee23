"""`fedpatch privacy-audit`: play the curious server (and a curious client) against
exactly what the data under audit would share, once per share mode, and write
audit.json, audit.md and pictures of what the attacks rebuilt."""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedpatch_app.errors import ConfigError
from fedpatch_app.privacy import attacks, figures
from fedpatch_app.privacy.detector import mode_detector
from fedpatch_app.privacy.keys import ShareKey, read_key
from fedpatch_app.privacy.rotation import Rotation
from fedpatch_app.privacy.settings import DP_EPSILON, AuditSettings
from fedpatch_app.privacy.views import SEES, curious_rows, server_view
from fedpatch_app.privacy.world import World, build
from fedpatch_app.settings import RunSettings, to_names

log = logging.getLogger(__name__)

#: What a protection must reach to count as holding (against the public-only baseline
#: and the plain shares' detector).
HOLDS = {"psnr_above_baseline": 1.0, "membership_auc": 0.6, "image_auroc_cost": 0.02}
#: What the plain shares must give for the attacker to be strong enough to judge anything.
STRONG = {"psnr_above_baseline": 2.0, "membership_auc": 0.9}


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(values)), 4) if values else None


def audit_mode(
    world: World, mode: str, rotation: Rotation, base, detectors: dict[str, tuple]
) -> tuple[dict, np.ndarray]:
    """One mode's row of the audit, and the strongest estimate of the showcase rows.
    `detectors`: the detectors built so far (the two rotation modes share theirs)."""
    view = server_view(world, mode, rotation)
    found = attacks.run_view(world, view.rows, view.estimates)
    name, member = attacks.best(found)
    psnr, ssim = found[name]["reconstruction_psnr"], found[name]["reconstruction_ssim"]
    strongest = found.get(member, {"membership_auc": math.nan})
    family = "rotation" if mode.startswith("rotation") else mode
    if family not in detectors:
        detectors[family] = mode_detector(world, mode, rotation)
    quality, banks = detectors[family]
    si, _ = figures.showcase(world)
    r = view.estimates[name]
    shown = view.rows[si] if r is None else (view.rows[si].astype(np.float64) @ r)
    row = {
        "what_the_server_sees": SEES[mode],
        "reconstruction_psnr": psnr,
        "reconstruction_ssim": ssim,
        "baseline_psnr": round(base.psnr, 3),
        "baseline_ssim": round(base.ssim, 4),
        "psnr_above_baseline": round(psnr - base.psnr, 3),
        "strongest_reconstruction": name,
        "membership_auc": strongest["membership_auc"],
        "membership_auc_ci95": strongest.get("membership_auc_ci95"),
        "membership_candidates": strongest.get("membership_candidates"),
        "strongest_membership": member,
        "image_auroc": _mean([q["image_auroc"] for q in quality.values()]),
        "auc_spro_0.3": _mean([q.get("auc_spro_0.3") for q in quality.values()]),
        "per_category": quality,
        "attacks": found,
        "curious_client": attacks.curious_client(world, curious_rows(world, mode, banks)),
    }
    return row, np.asarray(shown, dtype=np.float32)


def dp_row(world: World, base, mode: str = "dp", dim: int = 0) -> dict:
    """A DP mode's row (`dp`, or `dp_projection` in its public subspace): its releases
    attacked as the other modes' rows (the baseline on its own truth: the client patches
    nearest the noisy means)."""
    eps = world.settings.dp.epsilon if world.settings.dp.enabled else DP_EPSILON
    if mode == "dp_projection":
        from fedpatch_app.privacy.dp_projection import dp_projection_mode

        out = dp_projection_mode(world, eps, dim)
    else:
        from fedpatch_app.privacy.dp_mode import dp_mode

        out = dp_mode(world, eps)
    s = out["server"]
    member = {k: s[k] for k in s if k.startswith("membership")}
    direct = {
        "reconstruction_psnr": round(s["psnr"], 3),
        "reconstruction_ssim": round(s["ssim"], 4),
        **member,
    }
    quality = out["per_category"]
    facts = {"epsilon": eps, "rows_held_by_server": s["rows"], "banks": out["banks"]}
    if "noise" in out:
        facts["noise"] = out["noise"]
    return {
        "what_the_server_sees": SEES[mode],
        "reconstruction_psnr": direct["reconstruction_psnr"],
        "reconstruction_ssim": direct["reconstruction_ssim"],
        "baseline_psnr": round(s["baseline"].psnr, 3),
        "baseline_ssim": round(s["baseline"].ssim, 4),
        "psnr_above_baseline": round(s["psnr"] - s["baseline"].psnr, 3),
        "strongest_reconstruction": s.get("strongest", "direct"),
        "membership_auc": s["membership_auc"],
        "membership_auc_ci95": s.get("membership_auc_ci95"),
        "membership_candidates": s.get("membership_candidates"),
        "strongest_membership": "direct",
        "image_auroc": _mean([q["image_auroc"] for q in quality.values()]),
        "auc_spro_0.3": _mean([q.get("auc_spro_0.3") for q in quality.values()]),
        "per_category": quality,
        "attacks": s.get("attacks", {"direct": direct}),
        "curious_client": out["curious_client"],
        "dp": facts,
    }


def verdicts(modes: dict[str, dict]) -> dict[str, Any]:
    """Whether the plain shares show the attack working, and which protections hold."""
    raw = modes.get("raw")
    out: dict[str, Any] = {"attack_strong_enough": None, "holding": []}
    if raw is not None:
        strong = (
            raw["psnr_above_baseline"] >= STRONG["psnr_above_baseline"]
            and raw["membership_auc"] >= STRONG["membership_auc"]
        )
        out["attack_strong_enough"] = strong
        if not strong:
            out["message"] = (
                "the inversion model is too weak to judge anything: on plain shares it "
                f"reached {raw['psnr_above_baseline']:+.2f} dB over the public baseline and "
                f"membership AUC {raw['membership_auc']:.3f} (needs +2 dB and 0.9)"
            )
    for name, row in modes.items():
        if name == "raw":
            continue
        cost = None
        if raw is not None and row["image_auroc"] is not None and raw["image_auroc"] is not None:
            cost = round(raw["image_auroc"] - row["image_auroc"], 4)
        row["image_auroc_cost"] = cost
        row["holds"] = bool(
            out["attack_strong_enough"]
            and row["psnr_above_baseline"] <= HOLDS["psnr_above_baseline"]
            and row["membership_auc"] <= HOLDS["membership_auc"]
            and cost is not None
            and cost <= HOLDS["image_auroc_cost"]
        )
        if row["holds"]:
            out["holding"].append(name)
    return out


def run_audit(settings: RunSettings, audit: AuditSettings, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    key = read_key(audit.share_key) if audit.share_key else ShareKey.for_audit(settings.seed)
    world = build(settings, audit, key, out)
    rotation = Rotation.of(key, int(world.spec.embed_dim))
    base = attacks.baseline(world, world.sample).best
    modes: dict[str, dict] = {}
    detectors: dict[str, tuple] = {}
    for mode in audit.modes:
        log.info("audit: mode %s", mode)
        if mode == "dp":
            modes[mode] = dp_row(world, base, mode)
            continue
        if mode == "dp_projection":
            dims = audit.projection_dim
            for dim in dims:
                name = mode if len(dims) == 1 else f"{mode}_d{dim}"
                modes[name] = dp_row(world, base, mode, dim)
            continue
        modes[mode], shown = audit_mode(world, mode, rotation, base, detectors)
        title = f"{mode}: {modes[mode]['strongest_reconstruction']} attack"
        figures.draw(world, shown, title, out / "figures" / f"{mode}.png")
    result = {
        "format": "fedpatch-privacy-audit-v1",
        "settings": {k: _plain(v) for k, v in to_names(settings).items()},
        "audit": {k: _plain(v) for k, v in audit.model_dump().items()},
        "feature_spec": world.spec.with_weights_id().to_dict(),
        "clients": _clients(world),
        "share_key_id": key.key_id,
        **world.facts,
        "thresholds": {"holds": HOLDS, "attack_strong_enough": STRONG},
        "modes": modes,
        "verdict": verdicts(modes),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "audit.json").write_text(json.dumps(result, indent=2) + "\n")
    from fedpatch_app.privacy.report import write_markdown

    write_markdown(result, out / "audit.md")
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _clients(world: World) -> list[dict[str, Any]]:
    return [
        {"client": s.client, "category": s.category, "images": len(s.paths), "rows": len(s.rows)}
        for s in world.shares
    ]


def _output(path: Path, overwrite: bool) -> Path:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not (overwrite and (path / "audit.json").is_file()):
            raise ConfigError(
                f"--out {path}: the folder is not empty; choose a new folder, or pass "
                "--overwrite for the folder of an earlier audit"
            )
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_cli(args: argparse.Namespace) -> int:
    from fedpatch_app.settings.options import settings_from_args

    settings = settings_from_args(args)
    fields = AuditSettings.model_fields
    given = {k: getattr(args, k) for k in fields if getattr(args, k, None) is not None}
    try:
        audit = AuditSettings(**given)
    except ValueError as exc:
        raise ConfigError(f"privacy-audit options: {exc}") from None
    out = _output(Path(args.out), settings.overwrite)
    result = run_audit(settings, audit, out)
    print((out / "audit.md").read_text())
    verdict = result["verdict"]
    if verdict.get("message"):
        print(f"WARNING: {verdict['message']}")
    print(f"audit: {out / 'audit.json'}")
    return 0
