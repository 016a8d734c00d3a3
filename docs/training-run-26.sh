# Raw record of run 26 (docs/training.md): run 25's pair on the world with background grain, after SPEC.md 7's warm
# start. First the VAE on the grain world (or VAE_FROM), the latent cache, then flow matching alone from the shipped
# detail model on that cache (WARM_SECONDS, or WARM_FROM: a returned detail transformer), and from that warm start the
# shortcut model and flow matching only side by side, both at lr 3e-4, the shortcut model with run 25's settings
# (--sc-prob 0.5, starts 500 to 1000). The two differ only in the objective of their last phase. A later job takes
# RESUME_FROM, a folder holding each branch's returned detail transformer (NAME/), and trains each branch on from it.
# Nothing here changes the shipped bundle. Runs in the background (setsid), watched by docs/training-wait.sh. A CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 BATCH=2 VAE_BATCH=2 W=/tmp/w26 O=/tmp/o26 bash docs/training-run-26.sh
. docs/training-driver.sh
grain_pair_start || exit 1
detail_branch shortcut --lr 3e-4 --sc-prob 0.5 --sc-starts 500,600,700,800,900,1000 $(branch_start shortcut) &
detail_branch fm_only --lr 3e-4 --sc-prob 0 $(branch_start fm_only) &
wait
finish
