//! A tiny XML tree that serialises straight into Exclusive XML Canonicalization form.
//!
//! Documents rolegate signs are written already canonical (sorted attributes, start/end tag
//! pairs, escaped text, namespace declarations exactly where exclusive c14n renders them), so the
//! bytes that are digested are the bytes that are sent, and no XML parser is needed to sign.

/// A namespace prefix bound to its URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ns {
    /// The prefix, e.g. `saml`.
    pub prefix: &'static str,
    /// The namespace URI.
    pub uri: &'static str,
}

/// SAML 2.0 assertion namespace.
pub const SAML: Ns = Ns {
    prefix: "saml",
    uri: "urn:oasis:names:tc:SAML:2.0:assertion",
};
/// SAML 2.0 protocol namespace.
pub const SAMLP: Ns = Ns {
    prefix: "samlp",
    uri: "urn:oasis:names:tc:SAML:2.0:protocol",
};
/// SAML 2.0 metadata namespace.
pub const MD: Ns = Ns {
    prefix: "md",
    uri: "urn:oasis:names:tc:SAML:2.0:metadata",
};
/// XML Signature namespace.
pub const DS: Ns = Ns {
    prefix: "ds",
    uri: "http://www.w3.org/2000/09/xmldsig#",
};

/// XML Schema namespace, for `xsi:type` values such as `xs:string`.
pub const XS: Ns = Ns {
    prefix: "xs",
    uri: "http://www.w3.org/2001/XMLSchema",
};
/// XML Schema instance namespace (`xsi:type`).
pub const XSI: Ns = Ns {
    prefix: "xsi",
    uri: "http://www.w3.org/2001/XMLSchema-instance",
};
/// Exclusive XML Canonicalization namespace (`InclusiveNamespaces`).
pub const EC: Ns = Ns {
    prefix: "ec",
    uri: "http://www.w3.org/2001/10/xml-exc-c14n#",
};

/// A child of an element.
#[derive(Debug, Clone)]
pub enum Node {
    /// A nested element.
    Element(Element),
    /// Character data.
    Text(String),
}

/// An element whose name and attributes are unqualified apart from its own prefix.
#[derive(Debug, Clone)]
pub struct Element {
    ns: Ns,
    name: &'static str,
    attrs: Vec<(&'static str, String)>,
    qualified: Vec<(Ns, &'static str, String)>,
    declared: Vec<Ns>,
    children: Vec<Node>,
}

impl Element {
    /// An empty element `prefix:name`.
    pub const fn new(ns: Ns, name: &'static str) -> Self {
        Self {
            ns,
            name,
            attrs: Vec::new(),
            qualified: Vec::new(),
            declared: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Adds an attribute in namespace `ns`, such as `xsi:type`.
    #[must_use]
    pub fn qualified_attr(mut self, ns: Ns, name: &'static str, value: impl Into<String>) -> Self {
        self.qualified.push((ns, name, value.into()));
        self
    }

    /// Declares `ns` here although no element or attribute name uses it: for a prefix used only
    /// inside attribute values (`xsi:type="xs:string"`). Exclusive c14n renders it only when the
    /// signature's `InclusiveNamespaces` lists the prefix, which rolegate's signatures do.
    #[must_use]
    pub fn declare(mut self, ns: Ns) -> Self {
        self.declared.push(ns);
        self
    }

    /// Adds an unqualified attribute.
    #[must_use]
    pub fn attr(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attrs.push((name, value.into()));
        self
    }

    /// Appends a child element.
    #[must_use]
    pub fn child(mut self, child: Self) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Appends child elements.
    #[must_use]
    pub fn children(mut self, children: impl IntoIterator<Item = Self>) -> Self {
        self.children
            .extend(children.into_iter().map(Node::Element));
        self
    }

    /// Appends character data.
    #[must_use]
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Inserts a child element at `index` among the children.
    pub fn insert_child(&mut self, index: usize, child: Self) {
        let index = index.min(self.children.len());
        self.children.insert(index, Node::Element(child));
    }

    /// The element serialised as the apex of an exclusive-c14n document subset.
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.write(&mut out, &mut Vec::new());
        out
    }

    fn write(&self, out: &mut String, rendered: &mut Vec<Ns>) {
        out.push('<');
        push_qname(out, self.ns, self.name);
        // Exclusive c14n renders a declaration where the prefix is visibly used (the element's
        // own name or one of its attributes), or listed as inclusive, and no output ancestor
        // already rendered the same binding; declarations come first, sorted by prefix.
        let mut declarations: Vec<Ns> = Vec::new();
        let used = std::iter::once(self.ns)
            .chain(self.qualified.iter().map(|(ns, _, _)| *ns))
            .chain(self.declared.iter().copied());
        for ns in used {
            if !rendered.contains(&ns) && !declarations.contains(&ns) {
                declarations.push(ns);
            }
        }
        declarations.sort_by(|a, b| a.prefix.cmp(b.prefix));
        for ns in &declarations {
            out.push_str(" xmlns:");
            out.push_str(ns.prefix);
            out.push_str("=\"");
            escape_attr(out, ns.uri);
            out.push('"');
        }
        // Unqualified attributes sort first (empty namespace URI), by name; then qualified
        // ones by namespace URI and local name.
        let mut attrs: Vec<&(&str, String)> = self.attrs.iter().collect();
        attrs.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in attrs {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            escape_attr(out, value);
            out.push('"');
        }
        let mut qualified: Vec<&(Ns, &str, String)> = self.qualified.iter().collect();
        qualified.sort_by(|a, b| (a.0.uri, a.1).cmp(&(b.0.uri, b.1)));
        for (ns, name, value) in qualified {
            out.push(' ');
            push_qname(out, *ns, name);
            out.push_str("=\"");
            escape_attr(out, value);
            out.push('"');
        }
        out.push('>');
        let pushed = declarations.len();
        rendered.extend(declarations);
        for child in &self.children {
            match child {
                Node::Element(e) => e.write(out, rendered),
                Node::Text(t) => escape_text(out, t),
            }
        }
        rendered.truncate(rendered.len() - pushed);
        out.push_str("</");
        push_qname(out, self.ns, self.name);
        out.push('>');
    }
}

fn push_qname(out: &mut String, ns: Ns, name: &str) {
    out.push_str(ns.prefix);
    out.push(':');
    out.push_str(name);
}

/// Escapes character data as canonical XML does.
fn escape_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// Escapes an attribute value as canonical XML does.
fn escape_attr(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// True if `c` may appear in an XML 1.0 document at all.
pub const fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_sorted_and_escaped_and_namespaces_declared_once() {
        let doc = Element::new(SAMLP, "Response")
            .attr("Version", "2.0")
            .attr("ID", "_a")
            .attr("Destination", "https://x/?a=1&b=\"2\"\n")
            .child(Element::new(SAML, "Issuer").text("a<b & c>d\r"))
            .child(Element::new(SAMLP, "Status"));
        assert_eq!(
            doc.canonical(),
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
             Destination=\"https://x/?a=1&amp;b=&quot;2&quot;&#xA;\" ID=\"_a\" Version=\"2.0\">\
             <saml:Issuer xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">a&lt;b &amp; c&gt;d&#xD;</saml:Issuer>\
             <samlp:Status></samlp:Status></samlp:Response>"
        );
    }

    #[test]
    fn qualified_attributes_and_inclusive_prefixes_are_declared_where_used() {
        let doc = Element::new(SAML, "Attribute").attr("Name", "n").child(
            Element::new(SAML, "AttributeValue")
                .declare(XS)
                .qualified_attr(XSI, "type", "xs:string")
                .text("v"),
        );
        assert_eq!(
            doc.canonical(),
            "<saml:Attribute xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" Name=\"n\">\
             <saml:AttributeValue xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"xs:string\">v</saml:AttributeValue>\
             </saml:Attribute>"
        );
    }

    #[test]
    fn xml_char_rejects_controls() {
        assert!(!is_xml_char('\u{0}'));
        assert!(!is_xml_char('\u{1b}'));
        assert!(is_xml_char('é'));
    }
}
