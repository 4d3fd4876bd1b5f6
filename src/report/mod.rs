//! Reports (SPEC §17). So far: the schedules of `[[reports]]` entries and
//! the periods their runs cover (`schedule`); templates, rendering and
//! the portal come next (issue #22).

pub mod schedule;
