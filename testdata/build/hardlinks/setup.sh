# Run inside a copy of context/ before building: what git cannot store.
ln d/a.txt d/b.txt
