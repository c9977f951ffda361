//! Ids that say what they name. App-V names a package across its versions by
//! `PackageId`, one version by `VersionId`, and a connection group by
//! `AppConnectionGroupId`; all three are GUIDs, and mixing them up is a bug the
//! compiler should catch. Each serialises as the bare UUID string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random id.
            pub fn new_v4() -> Self {
                Self(Uuid::new_v4())
            }

            /// The UUID itself.
            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::from_str(s).map(Self)
            }
        }
    };
}

id! {
    /// `appv:PackageId`: a package across all its versions.
    PackageId
}

id! {
    /// `appv:VersionId`: one version of a package.
    VersionId
}

id! {
    /// `AppConnectionGroupId`: a connection group across its versions.
    ConnectionGroupId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bare_uuid_strings() {
        let id = PackageId::new_v4();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{}\"", id.uuid())
        );
        assert_eq!(id.to_string().parse::<PackageId>().unwrap(), id);
    }
}
