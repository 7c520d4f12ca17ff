// A browser-style Realtime client for `rtreplay check --cmd`, in JavaScript: it authenticates with
// subprotocols (no headers, as in a browser) and has the bug this tool exists to catch — on barge-in it
// truncates the current assistant item at the played ms, even at 0 ms. FIXED=1 applies PR #6249.
//
//   rtreplay check --cmd "node --experimental-websocket examples/naive_client.mjs"   # Node 20; plain `node` on 22+
const url = process.env.RTREPLAY_WS_URL;
const fixed = process.env.FIXED === "1";
const protocols = ["realtime", `openai-insecure-api-key.${process.env.OPENAI_API_KEY}`];
if (process.env.RTREPLAY_DIALECT === "beta") protocols.push("openai-beta.realtime-v1");

const ws = new WebSocket(url, protocols);
let itemId = null, audioBytes = 0, firstAudio = null;
const held = new Set();
const send = (event) => ws.send(JSON.stringify(event));

ws.onmessage = ({ data }) => {
  const event = JSON.parse(data);
  switch (event.type) {
    case "session.created":
      send({ type: "conversation.item.create",
             item: { type: "message", role: "user", content: [{ type: "input_text", text: "Hello!" }] } });
      send({ type: "response.create" });
      break;
    case "response.output_item.added":
      [itemId, audioBytes, firstAudio] = [event.item.id, 0, null];
      break;
    case "conversation.item.added":
    case "conversation.item.created":
      held.add(event.item.id);
      break;
    case "response.output_audio.delta":
    case "response.audio.delta":
      audioBytes += Buffer.from(event.delta, "base64").length;
      firstAudio ??= performance.now();
      break;
    case "input_audio_buffer.speech_started": {
      if (!itemId) break;
      const played = Math.min(firstAudio === null ? 0 : Math.floor(performance.now() - firstAudio),
                              Math.floor(audioBytes / 48));
      if (fixed && played === 0) {
        if (held.has(itemId)) send({ type: "conversation.item.delete", item_id: itemId });
        break;
      }
      send({ type: "conversation.item.truncate", item_id: itemId, content_index: 0, audio_end_ms: played });
      break;
    }
    case "error":
      console.log("server error:", event.error.message);
  }
};
