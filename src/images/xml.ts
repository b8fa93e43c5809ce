import { vmkitError } from '../errors.js';

/**
 * A deliberately tiny XML reader for OVF descriptors: elements, attributes, text, comments,
 * CDATA and the five predefined entities plus numeric references. Any DOCTYPE or entity
 * declaration is refused before parsing (no XXE, no billion laughs): OVF never needs one.
 */
export interface XmlElement {
  /** Qualified name as written (e.g. `rasd:ResourceType`). */
  name: string;
  /** Name without its namespace prefix. */
  local: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const MAX_DEPTH = 64;
const MAX_ELEMENTS = 100_000;

function invalid(message: string): never {
  throw vmkitError('VMKIT_OVF_INVALID', `OVF descriptor: ${message}`, { hint: 'The .ovf file is not well-formed XML; re-export the appliance.' });
}

function decode(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|lt|gt|amp|quot|apos);/g, (_m, e: string) => {
    if (e === 'lt') return '<';
    if (e === 'gt') return '>';
    if (e === 'amp') return '&';
    if (e === 'quot') return '"';
    if (e === 'apos') return "'";
    const code = e.startsWith('#x') ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
    if (!Number.isInteger(code) || code < 0 || code > 0x10ffff) invalid(`bad character reference &${e};`);
    return String.fromCodePoint(code);
  });
}

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Refuses DTDs and entity declarations outright. */
export function assertNoDtd(xml: string): void {
  if (/<!DOCTYPE/i.test(xml) || /<!ENTITY/i.test(xml)) {
    throw vmkitError('VMKIT_IMAGE_UNSAFE', 'The OVF descriptor declares a DOCTYPE or entities, which vmkit refuses (XML external entity / entity expansion attacks).', {
      hint: 'A valid OVF never needs a DOCTYPE; re-export the appliance with a standard tool.',
    });
  }
}

export function parseXml(xml: string): XmlElement {
  assertNoDtd(xml);
  let i = 0;
  let count = 0;
  const root: XmlElement = { name: '#document', local: '#document', attrs: {}, children: [], text: '' };
  const stack: XmlElement[] = [root];
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const top = stack[stack.length - 1]!;
    if (lt < 0) {
      if (xml.slice(i).trim()) invalid('text after the root element');
      break;
    }
    if (lt > i) top.text += decode(xml.slice(i, lt));
    if (xml.startsWith('<?', lt)) {
      const end = xml.indexOf('?>', lt);
      if (end < 0) invalid('unterminated processing instruction');
      i = end + 2;
    } else if (xml.startsWith('<!--', lt)) {
      const end = xml.indexOf('-->', lt);
      if (end < 0) invalid('unterminated comment');
      i = end + 3;
    } else if (xml.startsWith('<![CDATA[', lt)) {
      const end = xml.indexOf(']]>', lt);
      if (end < 0) invalid('unterminated CDATA');
      top.text += xml.slice(lt + 9, end);
      i = end + 3;
    } else if (xml.startsWith('<!', lt)) {
      invalid('declarations are not allowed');
    } else if (xml.startsWith('</', lt)) {
      const end = xml.indexOf('>', lt);
      if (end < 0) invalid('unterminated end tag');
      const name = xml.slice(lt + 2, end).trim();
      if (stack.length < 2 || top.name !== name) invalid(`unexpected </${name}>`);
      stack.pop();
      i = end + 1;
    } else {
      const m = /^<([A-Za-z_][\w.:-]*)((?:\s+[A-Za-z_][\w.:-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>/.exec(xml.slice(lt, lt + 65536));
      if (!m) invalid(`malformed tag at offset ${lt}`);
      const attrs: Record<string, string> = {};
      for (const a of m[2]!.matchAll(/([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) attrs[a[1]!] = decode(a[2] ?? a[3] ?? '');
      const name = m[1]!;
      const el: XmlElement = { name, local: name.includes(':') ? name.slice(name.indexOf(':') + 1) : name, attrs, children: [], text: '' };
      if (++count > MAX_ELEMENTS) invalid('too many elements');
      if (stack.length === 1 && root.children.length > 0) invalid('more than one root element');
      top.children.push(el);
      if (!m[3]) {
        stack.push(el);
        if (stack.length > MAX_DEPTH) invalid('nested too deeply');
      }
      i = lt + m[0].length;
    }
  }
  if (stack.length !== 1) invalid(`<${stack[stack.length - 1]!.name}> is not closed`);
  const doc = root.children[0];
  if (!doc) invalid('no root element');
  return doc;
}

/** Children with a given local name. */
export function kids(el: XmlElement | undefined, local: string): XmlElement[] {
  return el ? el.children.filter((c) => c.local === local) : [];
}

export function kid(el: XmlElement | undefined, local: string): XmlElement | undefined {
  return kids(el, local)[0];
}

/** An attribute by local name (ovf:href, href …). */
export function attr(el: XmlElement | undefined, local: string): string | undefined {
  if (!el) return undefined;
  for (const [k, v] of Object.entries(el.attrs)) {
    if (k === local || k.endsWith(`:${local}`)) return v;
  }
  return undefined;
}

export function textOf(el: XmlElement | undefined): string {
  return (el?.text ?? '').trim();
}
