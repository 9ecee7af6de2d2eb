//! `setters!`: one chainable setter per field of a `#[non_exhaustive]` settings struct.
//!
//! Settings structs across the crate (connections, servers, clients, security, files) are built
//! with `Default` and then chained setters, so that adding a field never breaks a caller. This
//! module owns only the macro.

/// `setters!(Type { /// doc\n field: Type, ... })`: one chainable setter per field.
macro_rules! setters {
    ($ty:ty { $($(#[doc = $doc:literal])* $field:ident : $fty:ty,)* }) => {
        impl $ty {
            $(
                $(#[doc = $doc])*
                #[must_use]
                pub fn $field(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
pub(crate) use setters;
