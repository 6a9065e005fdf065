#!/usr/bin/env bash
# Turns a training log written by ad_csv_log (a header "step,name,..." and
# one row per epoch) into a PNG with gnuplot: the loss columns on top, the
# other columns (accuracies) below, all against the step.
#
#   build/examples/digits --csv build/digits.csv
#   examples/plot_training.sh build/digits.csv build/digits.png
#
# Needs Debian's gnuplot (apt-get install gnuplot-nox); without it the
# script says so and exits with status 3.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 LOG.csv [OUT.png]" >&2
  exit 2
fi
csv=$1
png=${2:-${csv%.csv}.png}
if [ ! -r "$csv" ]; then
  echo "$0: cannot read $csv" >&2
  exit 1
fi
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "$0: gnuplot is not installed (apt-get install gnuplot-nox)" >&2
  exit 3
fi

header=$(head -n 1 "$csv" | tr -d '\r')
IFS=, read -r -a cols <<<"$header"
if [ "${#cols[@]}" -lt 2 ] || [ "${cols[0]}" != step ]; then
  echo "$0: $csv does not start with a header step,name,..." >&2
  exit 1
fi
if [ "$(wc -l <"$csv")" -lt 2 ]; then
  echo "$0: $csv has no rows yet" >&2
  exit 1
fi

# One plot clause per column: losses in the top panel, the rest below.
losses="" others=""
for ((i = 1; i < ${#cols[@]}; i++)); do
  name=${cols[i]}
  clause="'$csv' using 1:$((i + 1)) with linespoints title '${name//_/ }'"
  case $name in
    *loss*) losses="${losses:+$losses, }$clause" ;;
    *) others="${others:+$others, }$clause" ;;
  esac
done

panels=0
[ -n "$losses" ] && panels=$((panels + 1))
[ -n "$others" ] && panels=$((panels + 1))

gnuplot <<EOF
set terminal pngcairo size 800,$((300 * panels + 60)) noenhanced
set output '$png'
set datafile separator ','
set datafile missing ''
set grid
set multiplot layout $panels,1 title 'training log: $(basename "$csv")'
$( [ -n "$losses" ] && printf "set key top right\nset ylabel 'loss'\nset xlabel 'step'\nplot %s\n" "$losses" )
$( [ -n "$others" ] && printf "set key bottom right\nset ylabel 'value'\nset xlabel 'step'\nplot %s\n" "$others" )
unset multiplot
EOF
echo "wrote $png"
