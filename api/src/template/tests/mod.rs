//! Unit tests: the parser (syntax and errors), the mapping of each attribute, and a
//! property test that no input makes the parser or the mapping panic.

mod fuzz;
mod map_devices;
mod map_top;
mod parse;
