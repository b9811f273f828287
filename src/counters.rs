//! Named counters: an enum whose variants name each counter, a stable snake_case name for each
//! (what `carpioctl show counters` and `carpio replay` print), and a fixed-size array to count
//! in. Every drop and every reject in carpio has one (DESIGN.md, style rule 6).

/// Declares a fieldless enum of counters with a name per variant.
///
/// Generates `COUNT`, `ALL`, `name()` and `index()`.
#[macro_export]
macro_rules! named_counters {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        $vis enum $name { $($(#[$vm])* $var,)* }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var,)*];
            /// Number of variants.
            pub const COUNT: usize = Self::ALL.len();
            /// The counter's stable name.
            pub const fn name(self) -> &'static str {
                match self { $($name::$var => $s,)* }
            }
            /// Position in `ALL`.
            #[inline]
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// A per-core block of counters indexed by a [`named_counters!`] enum `E` with `N` variants.
/// Plain `u64`s: each block is written by exactly one worker thread and read by summing
/// snapshots, so there is nothing to synchronise on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters<const N: usize> {
    pub values: [u64; N],
}

impl<const N: usize> Default for Counters<N> {
    fn default() -> Self {
        Self { values: [0; N] }
    }
}

impl<const N: usize> Counters<N> {
    #[inline]
    pub fn add(&mut self, index: usize, n: u64) {
        self.values[index] += n;
    }

    #[inline]
    pub fn get(&self, index: usize) -> u64 {
        self.values[index]
    }

    pub fn total(&self) -> u64 {
        self.values.iter().sum()
    }

    /// Adds another block into this one (summing per-core blocks).
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.values.iter_mut().zip(other.values.iter()) {
            *a += b;
        }
    }
}
