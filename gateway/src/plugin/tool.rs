//! Library side of `gauntlet plugin new | inspect | validate`.
