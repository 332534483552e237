//! The solver: turns a parsed Dockerfile into the work a build does — which stages a target
//! needs, in what order, with every instruction's variables expanded in its ARG/ENV scope.
//! (Content-hash cache keys and the step-level DAG arrive with the solver issue.)

pub mod plan;
pub mod platform;

pub use plan::{
    plan, BaseImageInfo, BaseImageResolver, BuildOptions, BuildPlan, FromSource, PlannedStage,
    PlannedStep, SolveError, StageBase,
};
pub use platform::Platform;
