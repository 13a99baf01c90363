# Sourced by the measure_*.sh scripts: the binary ($M6REC, default the release build), the work folder ($OUT,
# default /tmp/tasks), the repository root as the working directory, and the three datasets imported into $OUT
# when missing (ml, sci, toys).
M=${M6REC:-target/release/m6rec}
OUT=${OUT:-/tmp/tasks}; mkdir -p $OUT
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[ -d $OUT/ml ] || $M import movielens ../shared/data/ml-100k --out $OUT/ml >/dev/null
[ -d $OUT/sci ] || $M import unisrec ../shared/data/amazon-scientific --out $OUT/sci >/dev/null
[ -d $OUT/toys ] || $M import seqtext ../shared/data/amazon-toys/Toys_and_Games.txt --out $OUT/toys >/dev/null
