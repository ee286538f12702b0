//! The compositor role's pure core: the layout maths and the scene state machine.

pub mod layout;
pub mod scene;
