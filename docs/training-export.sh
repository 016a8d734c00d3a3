# Sourced by training-driver.sh and training-wait.sh: hands a GPU job's models back. Each line "PART NAME..." of
# $W/returns names runs whose PART (transformer, detail_transformer or vae) the job returns; export_models writes each as
# float16 in $W/NAME.tar, from the finished run's folder or, while it is still training, its latest snapshot
# (--snapshot-every), so that a watching call can bring back what a machine lost later would have taken with it.
W=${W:-/tmp/w}; O=${O:-/tmp/o}
export_models() {
  PYTHONPATH=/tmp/site:$PWD OMP_NUM_THREADS=2 python3 - $W $O <<'PY'
import sys, tarfile, time
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from pixelwizard.models.transformer_pixelwizard import PixelWizardTransformer3DModel

work, out = Path(sys.argv[1]), Path(sys.argv[2])
lines = (work / "returns").read_text().splitlines() if (work / "returns").is_file() else []
for part, *names in (line.split() for line in lines if line.strip()):
    cls = {"detail_transformer": PixelWizardTransformer3DModel, "vae": AutoencoderKLWan}.get(part, WanTransformer3DModel)
    for name in names:
        for _ in range(3):  # a snapshot can be replaced while it is read: read the newer one
            source = next((f for f in (work / name, work / f"{name}.snapshot") if (f / part).is_dir()), None)
            if source is None:
                print(f"{name}: nothing to export yet")
                break
            try:
                cls.from_pretrained(source / part, torch_dtype=torch.float16).save_pretrained(out / name)
            except (OSError, ValueError) as exc:
                print(f"{name}: {source} changed while read ({exc}), again")
                time.sleep(1)
                continue
            staged = work / f".{name}.tar"
            with tarfile.open(staged, "w") as tar:
                tar.add(out / name, arcname=name)
            staged.replace(work / f"{name}.tar")
            kind = "the finished run" if source.name == name else "its latest snapshot"
            print(f"{name}: exported from {kind}, saved {time.ctime((source / part).stat().st_mtime)}")
            break
PY
}
pack_logs() {  # the logs, reports, exit codes and start time in $W/logs.tgz
  (cd $W && find . -maxdepth 1 \( -name '*.log' -o -name '*.json' -o -name '*.exit' -o -name started \) -print0 \
    | xargs -0 tar czf $W/.logs.tgz && mv $W/.logs.tgz $W/logs.tgz)
}
