# Run inside a copy of context/ before building: what git cannot store.
chmod 0600 dir/f2.txt
chmod 0750 dir/sub
