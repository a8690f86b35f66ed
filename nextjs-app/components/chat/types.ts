export type ChatMessage = {
  id: string;
  text: string;
  from: { id: string; name: string };
  at: number;
};

export type Typing = { typing: boolean };
