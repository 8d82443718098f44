//! Enums whose variants are spelled on the wire: one definition of each spelling.

/// Defines a fieldless enum whose variants each have a fixed spelling (`Variant =
/// "spelling"`), with [`ALL`](#associatedconstant.ALL) in declaration order (which is also
/// the discriminant order, so `ALL[v as usize] == v`), `as_str` and `parse`.
macro_rules! spelled_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $spelling:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration (and discriminant) order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The variant's spelling on the wire and in Python.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $spelling,)+
                }
            }

            /// The variant spelled `s`.
            #[allow(dead_code)] // not every enum is read from text
            pub fn parse(s: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }
    };
}

pub(crate) use spelled_enum;

#[cfg(test)]
mod tests {
    spelled_enum! {
        enum Colour {
            Red = "red",
            DarkBlue = "dark_blue",
        }
    }

    #[test]
    fn spellings_and_codes_follow_the_declaration() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::DarkBlue]);
        assert_eq!(Colour::DarkBlue.as_str(), "dark_blue");
        for (i, c) in Colour::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
