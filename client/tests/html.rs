//! The `--html` search page: nothing that comes from the query or the server can open a tag or
//! leave an attribute (an operator opens this page in a browser), and a withheld slot shows the
//! disclaimer, not a photo.

use imagesearch_client::html::search_html;
use imagesearch_client::{FoundPhoto, SearchResults, Slot};
use imagesearch_proto::DISCLAIMER;

/// A photo whose id would close a single-quoted `alt` attribute and add a handler, a MIME type
/// that would close the `src` attribute and the tag, and a withheld slot.
fn hostile_results() -> SearchResults {
    SearchResults {
        hits: vec![
            Slot::Photo(FoundPhoto {
                rank: 1,
                id: "x' onerror='alert(1)".into(),
                score: 0.9,
                reference: "gallery:x".into(),
                data: b"jpeg".to_vec(),
                mime_type: "image/jpeg\"><script>alert(3)</script>".into(),
            }),
            Slot::Withheld { rank: 2, score: 0.5, disclaimer: DISCLAIMER.into() },
        ],
        version: 3,
        query_withheld: None,
        gallery_size: 2,
        next_page_token: String::new(),
    }
}

#[test]
fn hostile_ids_queries_and_mime_types_stay_inside_their_text() {
    let page = search_html("<script>alert(2)</script> a dog", "DE' onload='alert(4)", &hostile_results());
    for broken_out in ["onerror='", "onerror=\"", "onload='", "<script"] {
        assert!(!page.contains(broken_out), "{broken_out:?} in the page: {page}");
    }
    // The text is still there, escaped, inside its attribute.
    assert!(page.contains("alt=\"x&#39; onerror=&#39;alert(1)\""), "{page}");
    assert!(page.contains("&lt;script&gt;alert(2)&lt;/script&gt; a dog"), "{page}");
    // Only the page's own tags: one image, one figure per slot.
    assert_eq!(page.matches("<img ").count(), 1, "{page}");
    assert_eq!(page.matches("<figure>").count(), 2, "{page}");
}

#[test]
fn a_withheld_slot_and_a_withheld_query_show_the_disclaimer() {
    let page = search_html("a dog", "DE", &hostile_results());
    let withheld = page.split("<figure>").nth(2).expect("a second slot");
    assert!(withheld.contains(DISCLAIMER), "{withheld}");
    assert!(!withheld.contains("<img"), "a withheld slot shows no photo: {withheld}");

    let refused = SearchResults { hits: vec![], version: 0, query_withheld: Some(DISCLAIMER.into()), gallery_size: 0, next_page_token: String::new() };
    let page = search_html("a child", "", &refused);
    assert!(page.contains(DISCLAIMER), "{page}");
    assert!(page.contains("(none: treated as restricted)"), "{page}");
    assert!(!page.contains("<img"), "{page}");
}
