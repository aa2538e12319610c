"""Scores of the robustness report's 10 held-out clean crops and of their degraded copies
(each degraded along ATTRIBUTES[i % 5] as the generator probe does), with the clean
crops' median and spread per attribute:

    python research/clean_score_spread.py CHECKPOINT [PRISTINE]
"""
import sys, torch
torch.set_num_threads(1)
from attiqa_loss import load_attiqa, read_checkpoint_metadata, ATTRIBUTES
from pretrain.diagnostics.robustness_report import centre_crops
from pretrain.diagnostics.validity_report import report_files
from pretrain.diagnostics.robustness_attacks import ATTACK_DEGRADATIONS
from pretrain.degrade.families import degrade
ck = sys.argv[1]
net = load_attiqa(ck); meta = read_checkpoint_metadata(ck)
files = report_files([sys.argv[2] if len(sys.argv) > 2 else "../shared/data/pristine"], meta, holdout_every=5, all_images=False, max_images=10)
clean = centre_crops(files, 128, 256)
with torch.no_grad():
    s = net(clean)
    deg = torch.cat([degrade(clean[i:i+1], ATTRIBUTES[i%5], *ATTACK_DEGRADATIONS[ATTRIBUTES[i%5]], torch.Generator().manual_seed(i)) for i in range(len(clean))])
    d = net(deg)
print("attr        " + " ".join(f"{a[:6]:>7}" for a in ATTRIBUTES))
print("median      " + " ".join(f"{v:7.2f}" for v in s.median(0).values))
print("clean std   " + " ".join(f"{v:7.2f}" for v in s.std(0)))
for i in range(len(clean)):
    print(f"{ATTRIBUTES[i%5][:6]:6s} clean " + " ".join(f"{v:7.2f}" for v in s[i]) + "  deg " + " ".join(f"{v:5.2f}" for v in d[i]))
