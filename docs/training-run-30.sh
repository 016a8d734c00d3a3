# Raw record of run 30 (docs/training.md; run once reduced, with FM_STEPS=3000 WARM_SECONDS=150 VAE_SECONDS=120): the shortcut
# claim on the grain world again, with the two levers run 26 left untried. As run 26: the VAE on the grain world (or
# VAE_FROM), the latent cache, flow matching alone from the shipped detail model (WARM_SECONDS, or WARM_FROM). Then, from
# that warm start, side by side at lr 3e-4 cosine over their steps:
# - the shortcut model with self-consistency starts 100 to 1000 (run 26: 500 to 1000; its 8- and 32-step renders,
#   whose late steps start below t = 500 where no self-consistency step had started, overshot the most), --sc-prob 0.5,
#   SC_STEPS steps (default twice FM_STEPS);
# - flow matching only, FM_STEPS steps (default 8000),
# so that both take about the same number of flow-matching steps (run 26 matched time, and the shortcut model had a
# third of flow matching only's). A later job takes RESUME_FROM (a folder holding each branch's returned detail
# transformer, NAME/), RESUME_LR and the steps left in SC_STEPS and FM_STEPS. Nothing here changes the shipped bundle.
# Runs in the background (setsid), watched by docs/training-wait.sh. A CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 FM_STEPS=2 BATCH=2 VAE_BATCH=2 W=/tmp/w30 O=/tmp/o30 bash docs/training-run-30.sh
. docs/training-driver.sh
grain_pair_start || exit 1
FM_STEPS=${FM_STEPS:-8000}; SC_STEPS=${SC_STEPS:-$(( 2 * FM_STEPS ))}
# Steps, not time, end each branch (--max-seconds only caps a branch that runs far slower than run 26's).
BRANCH_SECONDS=${BRANCH_SECONDS:-1500}
detail_branch shortcut --lr 3e-4 --sc-prob 0.5 --sc-starts 100,200,300,400,500,600,700,800,900,1000 \
  --steps $SC_STEPS $(branch_start shortcut) &
detail_branch fm_only --lr 3e-4 --sc-prob 0 --steps $FM_STEPS $(branch_start fm_only) &
wait
finish
