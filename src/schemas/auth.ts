import { Type } from 'typebox';

export const TokenRequestSchema = Type.Object(
  {
    username: Type.String({ minLength: 1, maxLength: 256, description: 'etcd user name' }),
    password: Type.String({ minLength: 1, maxLength: 1024, description: 'its etcd password, checked by etcd' }),
  },
  { $id: 'TokenRequest', title: 'TokenRequest', additionalProperties: false },
);

export const TokenSchema = Type.Object(
  {
    token: Type.String({ description: 'Send as Authorization: Bearer <token>.' }),
    token_type: Type.Literal('Bearer'),
    expires_in: Type.Integer({ description: 'Seconds until it expires.' }),
  },
  { $id: 'Token', title: 'Token' },
);

export const TicketSchema = Type.Object(
  {
    ticket: Type.String({ description: 'Single use, for one event stream: GET /v1/watch/{key}?ticket=<ticket>.' }),
    expires_in: Type.Integer(),
  },
  { $id: 'Ticket', title: 'Ticket' },
);
