#!/bin/sh
# Generates the benchmark's project content in the current directory (the same on every side):
# f1k (1 KB), d100/ (100 files of 1 KB), big100m (100 MB random), big1g (1 GB sparse: zeros
# without using memory on tmpfs), gitrepo/ (20 000 files in 200 dirs, committed).
# Usage: gen.sh [FILES]  (FILES defaults to 20000)
set -eu
files=${1:-20000}
head -c 1024 /dev/urandom > f1k
mkdir -p d100
i=0
while [ $i -lt 100 ]; do
  head -c 1024 /dev/zero > "d100/$(printf %03d $i)"
  i=$((i + 1))
done
head -c 104857600 /dev/urandom > big100m
truncate -s 1G big1g
mkdir gitrepo
cd gitrepo
git init -q -b main
# 20 000 files with awk (one process), 100 per directory.
awk -v n="$files" 'BEGIN {
  for (i = 0; i < n; i++) {
    d = sprintf("d%03d", int(i / 100));
    if (i % 100 == 0) system("mkdir -p " d);
    f = sprintf("%s/f%05d.txt", d, i);
    print "file " i > f; close(f);
  }
}'
git add -A
git -c user.name=bench -c user.email=bench@invalid commit -q -m bench
git status --porcelain >/dev/null   # refresh the index's stat data, as a used checkout has
