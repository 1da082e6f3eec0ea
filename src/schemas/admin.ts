import { Type } from 'typebox';

const Name = Type.String({ minLength: 1, maxLength: 256 });

export const UserAddBody = Type.Object(
  {
    name: Name,
    password: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
    no_password: Type.Optional(Type.Boolean({ description: 'A user that cannot log in with a password (etcdctl user add --no-password).' })),
  },
  { additionalProperties: false },
);

export const PasswordBody = Type.Object({ password: Type.String({ minLength: 1, maxLength: 1024 }) }, { additionalProperties: false });
export const RoleAddBody = Type.Object({ name: Name }, { additionalProperties: false });
export const UserParams = Type.Object({ name: Name });
export const UserRoleParams = Type.Object({ name: Name, role: Name });
export const RoleParams = Type.Object({ name: Name });

const PermissionType = Type.Enum(['read', 'write', 'readwrite']);

export const PermissionSchema = Type.Object(
  {
    type: PermissionType,
    key: Type.Optional(Type.String({ description: 'The key (UTF-8).' })),
    key_base64: Type.Optional(Type.String()),
    prefix: Type.Optional(Type.Boolean({ description: 'Every key with this prefix (etcdctl --prefix=true).' })),
    range_end: Type.Optional(Type.String({ description: 'Exclusive end of a key range.' })),
    range_end_base64: Type.Optional(Type.String()),
    from_key: Type.Optional(Type.Boolean({ description: 'Every key from `key` on (etcdctl --from-key=true).' })),
  },
  { $id: 'Permission', title: 'Permission', additionalProperties: false },
);

export const RevokePermissionQuery = Type.Object(
  {
    key: Type.String({ description: 'The key (UTF-8) of the permission to revoke.' }),
    prefix: Type.Optional(Type.Enum(['', 'true', '1', 'false', '0'])),
    range_end: Type.Optional(Type.String()),
    from_key: Type.Optional(Type.Enum(['', 'true', '1', 'false', '0'])),
  },
  { additionalProperties: false },
);

export const UserSchema = Type.Object({ name: Type.String(), roles: Type.Array(Type.String()) }, { $id: 'User', title: 'User' });
export const RoleSchema = Type.Object({ name: Type.String(), permissions: Type.Array(Type.Ref('Permission')) }, { $id: 'Role', title: 'Role' });
export const NameListSchema = Type.Object({ names: Type.Array(Type.String()) }, { $id: 'NameList', title: 'NameList' });
export const AdminDoneSchema = Type.Object({ revision: Type.Integer() }, { $id: 'AdminDone', title: 'AdminDone' });
