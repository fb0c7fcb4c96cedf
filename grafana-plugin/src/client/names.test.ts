import { channelPath, readChannels, readableQuery, writeChannels } from './names';
import { streamUrl } from './url';

const NAMES = ['sensors/température 1', 'telegraf/c,pu', 'a?b#c/100%', 'データ/温度 🌡️', 'job:http_requests:rate5m'];

describe('channel names in URLs', () => {
  it('percent-encodes each level of a path and keeps the slashes', () => {
    expect(channelPath('sensors/température 1')).toBe('sensors/temp%C3%A9rature%201');
    expect(channelPath('a?b#c/100%')).toBe('a%3Fb%23c/100%25');
    for (const name of NAMES) {
      expect(channelPath(name).split('/').map(decodeURIComponent).join('/')).toBe(name);
    }
  });

  it('round-trips any selection through a page query, commas included', () => {
    const q = new URLSearchParams();
    writeChannels(q, NAMES);
    q.set('window', '5m');
    const search = `?${readableQuery(q)}`;
    expect(search).not.toMatch(/[ #]/);
    expect(readChannels(search)).toEqual(NAMES);
    expect(new URLSearchParams(search).get('window')).toBe('5m');
  });

  it('still reads the older comma-separated channels parameter', () => {
    expect(readChannels('?channels=random-walk,test/listed')).toEqual(['random-walk', 'test/listed']);
    expect(readChannels('?channel=solo')).toEqual(['solo']);
    expect(readChannels('')).toEqual([]);
  });

  it('puts a Unicode channel in a stream URL as one query value', () => {
    const url = new URL(
      streamUrl('http://localhost:8080', { type: 'subscribe', id: 'A', channel: 'telegraf/c,pu température', from: 0 })
    );
    expect(url.pathname).toBe('/api/stream');
    expect(url.searchParams.get('channel')).toBe('telegraf/c,pu température');
  });

  it('sends field names with commas one by one, never joined', () => {
    const url = new URL(
      streamUrl('http://x', { type: 'subscribe', id: 'A', channel: 'c', fields: ['usage {host="a,b"}', 'n'] })
    );
    expect(url.searchParams.getAll('field')).toEqual(['usage {host="a,b"}', 'n']);
    expect(url.searchParams.has('fields')).toBe(false);
    const plain = new URL(streamUrl('http://x', { type: 'subscribe', id: 'A', channel: 'c', fields: ['a', 'b'] }));
    expect(plain.searchParams.get('fields')).toBe('a,b');
  });
});
