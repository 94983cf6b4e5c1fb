//! The page `imagesearch search --html` writes: each photo inline (a `data:` URI) or the
//! disclaimer in its place. Everything that comes from the user or the server (the query, the
//! region, photo ids, MIME types, disclaimers) is escaped with
//! [`imagesearch_compliance::escape_html`], both quotes included, so none of it can open a tag
//! or leave the attribute it is written in.

use base64::Engine;
use imagesearch_compliance::escape_html;

use crate::{SearchResults, Slot};

const STYLE: &str = "body{font-family:sans-serif;margin:2em}\
    figure{display:inline-block;margin:.5em;width:240px;vertical-align:top}\
    img{width:240px;height:180px;object-fit:cover}\
    .withheld{width:240px;height:180px;background:#eee;display:flex;align-items:center;\
    text-align:center;padding:.5em;box-sizing:border-box;color:#555}";

/// The HTML page of a search for `query` in `region` ("" = none, which is treated as restricted).
pub fn search_html(query: &str, region: &str, results: &SearchResults) -> String {
    let mut body = String::new();
    if let Some(d) = &results.query_withheld {
        body += &format!("<div class=\"withheld\">{}</div>", escape_html(d));
    }
    for slot in &results.hits {
        body += &slot_html(slot);
    }
    let served = if results.version == 0 {
        "withheld by the client before it was sent".to_string()
    } else {
        format!("scorer version {} · gallery {} photos", results.version, results.gallery_size)
    };
    let region = if region.is_empty() { "(none: treated as restricted)" } else { region };
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>imagesearch: {q}</title><style>{STYLE}</style>\
         <h1>“{q}”</h1><p>region {reg} · {served}</p>{body}",
        q = escape_html(query),
        reg = escape_html(region),
    )
}

/// One result: the photo with its rank, id and score, or the disclaimer with rank and score.
fn slot_html(slot: &Slot) -> String {
    match slot {
        Slot::Photo(p) => format!(
            "<figure><img src=\"data:{mime};base64,{data}\" alt=\"{id}\"><figcaption>#{rank} {id} — {score:.3}</figcaption></figure>",
            mime = escape_html(&p.mime_type),
            data = base64::engine::general_purpose::STANDARD.encode(&p.data),
            id = escape_html(&p.id),
            rank = p.rank,
            score = p.score,
        ),
        Slot::Withheld { rank, score, disclaimer } => format!(
            "<figure><div class=\"withheld\">{}</div><figcaption>#{rank} — {score:.3}</figcaption></figure>",
            escape_html(disclaimer)
        ),
    }
}
