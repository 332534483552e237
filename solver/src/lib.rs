//! The solver: turns Dockerfile stages into a DAG of build steps with content-hash cache keys. (Arrives with the solver issue.)
