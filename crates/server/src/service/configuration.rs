//! App-V's dynamic configuration documents, checked before they are stored: a
//! deployment configuration (`PUT …/deployment-config`) must be a well-formed
//! XML document whose one root element is `DeploymentConfiguration`, a user
//! configuration (a grant's `user_config`) one whose root is
//! `UserConfiguration` — by local name, whatever the namespace prefix (App-V's
//! schema namespaces are `http://schemas.microsoft.com/appv/2010/deploymentconfiguration`
//! and `…/userconfiguration`). No DOCTYPE (no entity expansion), and no larger
//! than a JSON request body may be.

use quick_xml::events::Event;

use crate::error::{ApiError, ApiResult};

/// The largest configuration document: the management API's JSON body limit.
pub(crate) const MAX_CONFIG_BYTES: usize = crate::management::JSON_LIMIT;

/// Which configuration document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Configuration {
    /// A package version's `DeploymentConfiguration`.
    Deployment,
    /// A group's `UserConfiguration`, given with its entitlement.
    User,
}

impl Configuration {
    /// The root element App-V requires.
    pub(crate) fn root(self) -> &'static str {
        match self {
            Configuration::Deployment => "DeploymentConfiguration",
            Configuration::User => "UserConfiguration",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Configuration::Deployment => "deployment configuration",
            Configuration::User => "user configuration",
        }
    }

    /// Check `text` as this document: a 400 that names the expected root otherwise.
    pub(crate) fn check(self, text: &str) -> ApiResult<()> {
        let (what, root) = (self.what(), self.root());
        let refuse = |why: String| {
            ApiError::BadRequest(format!(
                "the {what} must be an XML document with the root element <{root}>: {why}"
            ))
        };
        if text.len() > MAX_CONFIG_BYTES {
            return Err(refuse(format!(
                "it is {} bytes, more than the limit of {MAX_CONFIG_BYTES}",
                text.len()
            )));
        }
        let mut reader = quick_xml::Reader::from_str(text);
        reader.config_mut().check_end_names = true;
        let mut depth = 0usize;
        let mut roots = 0usize;
        loop {
            let event = reader
                .read_event()
                .map_err(|e| refuse(format!("it is not well-formed XML ({e})")))?;
            let top = |name: quick_xml::name::QName<'_>| -> ApiResult<()> {
                if depth > 0 {
                    return Ok(());
                }
                if roots > 0 {
                    return Err(refuse("it has more than one root element".into()));
                }
                let local = name.local_name();
                if local.as_ref() != root.as_bytes() {
                    return Err(refuse(format!(
                        "its root element is <{}>",
                        String::from_utf8_lossy(local.as_ref())
                    )));
                }
                Ok(())
            };
            match event {
                Event::Start(e) => {
                    top(e.name())?;
                    if depth == 0 {
                        roots += 1;
                    }
                    depth += 1;
                }
                Event::Empty(e) => {
                    top(e.name())?;
                    if depth == 0 {
                        roots += 1;
                    }
                }
                Event::End(_) => depth = depth.saturating_sub(1),
                Event::DocType(_) => return Err(refuse("it has a DOCTYPE".into())),
                Event::Text(t) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                    return Err(refuse("it has text outside the root element".into()));
                }
                Event::Eof if depth > 0 => {
                    return Err(refuse(
                        "it is not well-formed XML (the root element is not closed)".into(),
                    ));
                }
                Event::Eof if roots == 0 => {
                    return Err(refuse("it has no root element".into()));
                }
                Event::Eof => return Ok(()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(kind: Configuration, text: &str) -> String {
        match kind.check(text) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn configurations_need_app_v_root_elements() {
        let deployment = Configuration::Deployment;
        let user = Configuration::User;
        for good in [
            "<DeploymentConfiguration/>",
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<DeploymentConfiguration PackageId=\"x\" \
             xmlns=\"http://schemas.microsoft.com/appv/2010/deploymentconfiguration\">\
             <UserConfiguration><Subsystems/></UserConfiguration></DeploymentConfiguration>\n",
            "<!-- exported --><a:DeploymentConfiguration xmlns:a=\"urn:x\"></a:DeploymentConfiguration>",
        ] {
            deployment.check(good).unwrap();
        }
        user.check("<UserConfiguration xmlns=\"http://schemas.microsoft.com/appv/2010/userconfiguration\"/>")
            .unwrap();
        for (kind, bad, why) in [
            (
                user,
                "<DeploymentConfiguration/>",
                "root element is <DeploymentConfiguration>",
            ),
            (
                deployment,
                "<UserConfiguration/>",
                "root element is <UserConfiguration>",
            ),
            (deployment, "<config/>", "root element is <config>"),
            (deployment, "", "no root element"),
            (deployment, "just text", "outside the root"),
            (deployment, "<DeploymentConfiguration>", "not well-formed"),
            (
                deployment,
                "<DeploymentConfiguration></Other>",
                "not well-formed",
            ),
            (
                deployment,
                "<DeploymentConfiguration/><DeploymentConfiguration/>",
                "more than one root",
            ),
            (
                deployment,
                "<!DOCTYPE x [<!ENTITY a \"b\">]><DeploymentConfiguration/>",
                "DOCTYPE",
            ),
        ] {
            let m = refused(kind, bad);
            assert!(m.contains(&format!("<{}>", kind.root())), "{m}");
            assert!(m.contains(why), "{bad:?}: {m}");
        }
        let huge = format!(
            "<DeploymentConfiguration>{}</DeploymentConfiguration>",
            " ".repeat(MAX_CONFIG_BYTES)
        );
        assert!(refused(deployment, &huge).contains("limit"));
    }
}
