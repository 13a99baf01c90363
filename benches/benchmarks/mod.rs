pub mod batching;
pub mod losses;
