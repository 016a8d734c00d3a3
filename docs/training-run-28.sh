# Raw record of run 28 (docs/training.md): detail models that take the object's shape and colour from the caption when
# the anchor contradicts it. Through the pipeline the detail stage draws the prompted shape in 35 to 37.5% of held-out
# clips, from an oracle anchor in 52 to 65% (run 27): the anchor model's object, in a shape drawn at chance, outweighs the
# caption. Here the latent cache also holds each clip's counterfactual anchor (the scene with its object in another
# shape and, half the time, another colour; the caption and the target clip unchanged), and the detail models get a
# flow-matching warm start from the shipped detail model and then the five branches, each with 30% of its samples on
# counterfactual anchors and a quarter of the rest on clean ones, object weighted. Shipped VAE, text encoder and anchor
# model. Selection happens on the CPU. Runs in the background (setsid), watched by docs/training-wait.sh. A CPU check:
#   DEVICE=cpu COMPILE=off CLIPS=8 STEPS=2 BATCH=2 W=/tmp/w28 O=/tmp/o28 bash docs/training-run-28.sh
. docs/training-driver.sh
returns detail_transformer shortcut fm_only uniform_k fixed_dt no_calibration
latent_cache $B synthetic 10240 --counterfactual-anchors || exit 1
recipe="--clean-anchor-prob 0.25 --counterfactual-anchor-prob 0.3 --object-weight 4"
continued_branches $B $recipe || exit 1
wait
finish
