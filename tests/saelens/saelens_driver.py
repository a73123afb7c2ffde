"""Run by the SAELens environment's python (.venv-saelens): load SAEs with SAELens and write their outputs.

    python saelens_driver.py JOB.json
    python saelens_driver.py < job paths, one a line   (imports SAELens first, prints "ready", then serves)

JOB: {"x": "x.safetensors", "out": DIR, "disk": {"key": folder, ...}, "hub": {"key": [repo, sae_id], ...}}.
For every SAE: DIR/<key>.safetensors with z = sae.encode(x) and x_hat = sae.decode(z), and DIR/<key>.json with
its class, cfg and metadata. Loading uses only SAELens' public API (SAE.load_from_disk, SAE.from_pretrained).
"""

import json
import sys
from pathlib import Path

import sae_lens
import torch
from sae_lens import SAE
from safetensors.torch import load_file, save_file


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    x = load_file(job["x"])["x"]
    out = Path(job["out"])
    saes = {k: SAE.load_from_disk(v) for k, v in job.get("disk", {}).items()}
    for k, (repo, sae_id) in job.get("hub", {}).items():
        saes[k] = SAE.from_pretrained(repo, sae_id)
    for key, sae in saes.items():
        with torch.no_grad():
            z = sae.encode(x)
            x_hat = sae.decode(z)
        save_file({"z": z.contiguous(), "x_hat": x_hat.contiguous()}, str(out / f"{key}.safetensors"))
        cfg = sae.cfg.to_dict()
        (out / f"{key}.json").write_text(
            json.dumps({"class": type(sae).__name__, "sae_lens": sae_lens.__version__, "cfg": cfg}, default=str)
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:  # SAELens takes ~15 s to import: the test starts this first and trains its run meanwhile
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip():
                main(line.strip())
                print(f"done {line.strip()}", flush=True)
