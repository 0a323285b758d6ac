"""Small modules of the tool and the review page, in the browser: which key events are
shortcuts (keys.js), the undo stack after a delete (tool/history.js) and the lease message
(tool/session.js)."""

from typing import Any

from tests.e2e.conftest import static_module_page


def test_only_text_entry_controls_keep_the_keys_to_themselves(browser_context: Any) -> None:
    page = static_module_page(browser_context, "keys")
    verdicts = page.evaluate(
        """async () => {
            const { typesText } = await import('/static/annotation/keys.js');
            const make = (html) => {
                const holder = document.createElement('div');
                holder.innerHTML = html;
                document.body.append(holder);
                return holder.firstElementChild;
            };
            const cases = {
                untyped: '<input>', text: '<input type="text">', number: '<input type="number">',
                search: '<input type="search">', email: '<input type="email">',
                textarea: '<textarea></textarea>', select: '<select><option>a</option></select>',
                editable: '<div contenteditable="true">x</div>',
                radio: '<input type="radio">', checkbox: '<input type="checkbox">',
                range: '<input type="range">', button: '<button>b</button>',
                submit: '<input type="submit">', canvas: '<canvas tabindex="0"></canvas>',
            };
            const out = {};
            for (const [name, html] of Object.entries(cases)) out[name] = typesText(make(html));
            out.body = typesText(document.body);
            out.document = typesText(document);
            return out;
        }"""
    )
    typing = {"untyped", "text", "number", "search", "email", "textarea", "select", "editable"}
    assert {name for name, types in verdicts.items() if types} == typing


def test_shortcut_letters_ignore_shift_and_caps_lock(browser_context: Any) -> None:
    page = static_module_page(browser_context, "keys")
    keys = page.evaluate(
        """async () => {
            const { shortcutKey } = await import('/static/annotation/keys.js');
            return ['b', 'B', 'Z', '?', '[', 'Enter', 'Tab', 'Delete'].map(
                (key) => shortcutKey(new KeyboardEvent('keydown', { key, shiftKey: key === 'B' })));
        }"""
    )
    assert keys == ["b", "b", "z", "?", "[", "Enter", "Tab", "Delete"]


def test_deleting_a_mask_takes_its_own_steps_out_of_the_undo_stack(browser_context: Any) -> None:
    """Mask 2's prompts, the clear of an earlier try and its accept go; mask 1's entries, the
    rejection of a prefilled mask made meanwhile and the work after mask 2 stay."""
    page = static_module_page(browser_context, "history")
    stacks = page.evaluate(
        """async () => {
            const { historyWithoutMask } = await import('/static/annotation/tool/history.js');
            const names = (stack) => stack.map((a) => a.type + (a.maskId ? a.maskId : ''));
            const p = { type: 'prompt' }, s = { type: 'stroke' }, c = { type: 'clear' };
            const accept = (maskId) => ({ type: 'accept', maskId });
            const reject = { type: 'reject', maskId: 9 };
            const stack = [p, s, accept(1), p, c, p, reject, s, accept(2), p];
            return {
                second: names(historyWithoutMask(stack, 2)),
                first: names(historyWithoutMask(stack, 1)),
                unknown: names(historyWithoutMask(stack, 7)),
            };
        }"""
    )
    assert stacks["second"] == ["prompt", "stroke", "accept1", "reject9", "prompt"]
    assert stacks["first"] == [
        "prompt", "clear", "prompt", "reject9", "stroke", "accept2", "prompt",
    ]  # fmt: skip
    assert stacks["unknown"] == [
        "prompt", "stroke", "accept1", "prompt", "clear", "prompt", "reject9", "stroke", "accept2",
        "prompt",
    ]  # fmt: skip


def test_deleting_a_mask_drops_its_edits_from_the_undo_stack(browser_context: Any) -> None:
    """A saved edit ends a work like an accept: deleting mask 1 drops its accept, its saved
    edit and the work of each, and a later start of an edit of it; mask 2's stay."""
    page = static_module_page(browser_context, "history-edits")
    stacks = page.evaluate(
        """async () => {
            const { historyWithoutMask } = await import('/static/annotation/tool/history.js');
            const names = (stack) => stack.map((a) => a.type + (a.maskId ? a.maskId : ''));
            const p = { type: 'prompt' }, s = { type: 'stroke' };
            const at = (type, maskId) => ({ type, maskId });
            const stack = [p, at('accept', 1), p, at('accept', 2),
                           at('edit', 1), s, at('edit-saved', 1),
                           at('edit', 2), s, at('edit-saved', 2), at('edit', 1)];
            return {
                first: names(historyWithoutMask(stack, 1)),
                second: names(historyWithoutMask(stack, 2)),
            };
        }"""
    )
    assert stacks["first"] == ["prompt", "accept2", "edit2", "stroke", "edit-saved2"]
    assert stacks["second"] == [
        "prompt", "accept1", "edit1", "stroke", "edit-saved1", "edit1",
    ]  # fmt: skip


def test_the_lease_message_says_the_time_in_the_browsers_locale(browser_context: Any) -> None:
    """The API's ISO time with microseconds becomes the local time (the date too when it is not
    today), and the sentence ends with a full stop."""
    context = browser_context.browser.new_context(locale="en-GB", timezone_id="Europe/Berlin")
    try:
        page = static_module_page(context, "lease")
        texts = page.evaluate(
            """async () => {
                const { leaseTakenText } = await import('/static/annotation/tool/session.js');
                const error = { message: 'image #25 is being annotated by annot1 until …',
                                body: { holder: 'annot1',
                                        expires_at: '2026-12-07T06:29:33.231127+00:00' } };
                return [
                    leaseTakenText(error, 25, new Date('2026-12-07T06:20:00Z')),
                    leaseTakenText(error, 25, new Date('2026-12-05T12:00:00Z')),
                    leaseTakenText({ message: 'image #25 is leased', body: {} }, 25),
                ];
            }"""
        )
    finally:
        context.close()
    assert texts == [
        "Image #25 is being annotated by annot1 until 07:29.",
        "Image #25 is being annotated by annot1 until 7 Dec 2026, 07:29.",
        "image #25 is leased.",
    ]
