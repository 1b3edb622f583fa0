// Launchers for the token + position embedding.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;
using Half = ILGPU.Half;

namespace L2L.Backends.Ops;

/// <summary>
/// Token + position embedding forward and parameter gradients; kernels loaded once per accelerator. The
/// <see cref="Bf16"/> and <see cref="Half"/> overloads (kernels loaded on first use) read 16-bit tables and write a
/// 16-bit output; their backward reads a 16-bit <c>dOutput</c> and accumulates into FP32 <c>dWte</c> / <c>dWpe</c>.
/// </summary>
public sealed class EmbeddingOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int> _forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, float> _backwardToken;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int, float> _backwardPosition;
    private readonly Lazy<Typed<Bf16>> _bf16;
    private readonly Lazy<Typed<Half>> _fp16;

    private sealed class Typed<T> where T : unmanaged
    {
        public Action<AcceleratorStream, KernelConfig, ArrayView<T>, ArrayView<int>, ArrayView<T>, ArrayView<T>, int, int> Forward = null!;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<T>, ArrayView<int>, int, int, int, float> BackwardToken = null!;
        public Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<T>, int, int, int, float> BackwardPosition = null!;
    }

    private Typed<T> Load<T, S>() where T : unmanaged where S : struct, IStorage<T> => new()
    {
        Forward = _accelerator.LoadKernel<ArrayView<T>, ArrayView<int>, ArrayView<T>, ArrayView<T>, int, int>(
            EmbeddingKernels.EmbeddingForwardGenericKernel<T, S>),
        BackwardToken = _accelerator.LoadKernel<ArrayView<float>, ArrayView<T>, ArrayView<int>, int, int, int, float>(
            EmbeddingKernels.EmbeddingBackwardTokenGenericKernel<T, S>),
        BackwardPosition = _accelerator.LoadKernel<ArrayView<float>, ArrayView<T>, int, int, int, float>(
            EmbeddingKernels.EmbeddingBackwardPositionGenericKernel<T, S>),
    };

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public EmbeddingOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _forward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>(
            EmbeddingKernels.EmbeddingForwardKernel);
        _backwardToken = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, float>(
            EmbeddingKernels.EmbeddingBackwardTokenKernel);
        _backwardPosition = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int, float>(
            EmbeddingKernels.EmbeddingBackwardPositionKernel);
        _bf16 = new(Load<Bf16, Bf16Storage>);
        _fp16 = new(Load<Half, Fp16Storage>);
        _fp32 = new Typed<float> { Forward = _forward, BackwardToken = _backwardToken, BackwardPosition = _backwardPosition };
    }

    private readonly Typed<float> _fp32;

    private Typed<T> Kernels<T>() where T : unmanaged => StorageDispatch.Pick<T, Typed<T>, Typed<Bf16>, Typed<Half>>(_fp32, _bf16, _fp16);

    /// <summary>The forward over the storage type <typeparamref name="T"/> (the two rows added in FP32, rounded once); for float, the FP32 overload's kernel.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Forward<T>(AcceleratorStream s, ArrayView<T> output, ArrayView<int> tokens, ArrayView<T> wte,
        ArrayView<T> wpe, int b, int t, int c) where T : unmanaged => Forward(Kernels<T>(), s, output, tokens, wte, wpe, b, t, c);

    /// <summary>The backward from a <typeparamref name="T"/> <c>dOutput</c> into FP32 <c>dWte</c> and <c>dWpe</c>; for float, the FP32 overload's kernels.</summary>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not a storage type.</exception>
    public void Backward<T>(AcceleratorStream s, ArrayView<float> dWte, ArrayView<float> dWpe, ArrayView<T> dOutput,
        ArrayView<int> plan, int segments, int b, int t, int c, float tokenScale = 1f, float positionScale = 1f) where T : unmanaged =>
        Backward(Kernels<T>(), s, dWte, dWpe, dOutput, plan, segments, b, t, c, tokenScale, positionScale);

    /// <summary>The forward with BF16 tables and output (the two rows added in FP32, rounded once); as the FP32 overload.</summary>
    public void Forward(AcceleratorStream s, ArrayView<Bf16> output, ArrayView<int> tokens, ArrayView<Bf16> wte,
        ArrayView<Bf16> wpe, int b, int t, int c) => Forward(_bf16.Value, s, output, tokens, wte, wpe, b, t, c);

    /// <summary>The forward with FP16 tables and output; as the FP32 overload.</summary>
    public void Forward(AcceleratorStream s, ArrayView<Half> output, ArrayView<int> tokens, ArrayView<Half> wte,
        ArrayView<Half> wpe, int b, int t, int c) => Forward(_fp16.Value, s, output, tokens, wte, wpe, b, t, c);

    /// <summary>The backward from a BF16 <c>dOutput</c> into FP32 <c>dWte</c> and <c>dWpe</c>; as the FP32 overload.</summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dWte, ArrayView<float> dWpe, ArrayView<Bf16> dOutput,
        ArrayView<int> plan, int segments, int b, int t, int c, float tokenScale = 1f, float positionScale = 1f) =>
        Backward(_bf16.Value, s, dWte, dWpe, dOutput, plan, segments, b, t, c, tokenScale, positionScale);

    /// <summary>The backward from an FP16 <c>dOutput</c> into FP32 <c>dWte</c> and <c>dWpe</c>; as the FP32 overload.</summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dWte, ArrayView<float> dWpe, ArrayView<Half> dOutput,
        ArrayView<int> plan, int segments, int b, int t, int c, float tokenScale = 1f, float positionScale = 1f) =>
        Backward(_fp16.Value, s, dWte, dWpe, dOutput, plan, segments, b, t, c, tokenScale, positionScale);

    private void Forward<T>(Typed<T> k, AcceleratorStream s, ArrayView<T> output, ArrayView<int> tokens, ArrayView<T> wte,
        ArrayView<T> wpe, int b, int t, int c) where T : unmanaged
    {
        CheckShapes(output, tokens, wte, wpe, b, t, c, nameof(output), nameof(wte), nameof(wpe));
        k.Forward(s, Launch.Elementwise(_accelerator, output.Length), output, tokens, wte, wpe, t, c);
    }

    private void Backward<T>(Typed<T> k, AcceleratorStream s, ArrayView<float> dWte, ArrayView<float> dWpe, ArrayView<T> dOutput,
        ArrayView<int> plan, int segments, int b, int t, int c, float tokenScale, float positionScale) where T : unmanaged
    {
        var rows = CheckBackward(dWte, dWpe, dOutput, plan, segments, b, t, c);
        k.BackwardToken(s, Launch.Elementwise(_accelerator, (long)segments * c), dWte, dOutput, plan, rows, segments, c, tokenScale);
        k.BackwardPosition(s, Launch.Elementwise(_accelerator, (long)t * c), dWpe, dOutput, b, t, c, positionScale);
    }

    /// <summary>
    /// <c>output[b*T + t] = wte[tokens[b*T + t]] + wpe[t]</c>: <c>output</c> (B*T, C), <c>tokens</c> (B*T)
    /// int32 already validated to lie in <c>[0, V)</c> on the host, <c>wte</c> (V, C), <c>wpe</c> (maxT, C) with maxT &gt;= T.
    /// </summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<int> tokens, ArrayView<float> wte,
        ArrayView<float> wpe, int b, int t, int c)
    {
        CheckShapes(output, tokens, wte, wpe, b, t, c, nameof(output), nameof(wte), nameof(wpe));
        _forward(s, Launch.Elementwise(_accelerator, output.Length), output, tokens, wte, wpe, t, c);
    }

    /// <summary>
    /// <c>dWte</c> (V, C) += <c>dOutput</c> (B*T, C) rows scattered by token, and <c>dWpe</c> (maxT, C)
    /// rows <c>0..T-1</c> += the sum over the batch; both deterministic, without atomics.
    /// <paramref name="plan"/> is the device copy of <see cref="EmbeddingScatterPlan.Build"/>'s output for
    /// the same tokens, and <paramref name="segments"/> its return value. Each row sum is multiplied by
    /// <paramref name="tokenScale"/> (into <c>dWte</c>) or <paramref name="positionScale"/> (into <c>dWpe</c>) before it
    /// is added; 1 (the default) leaves it unchanged bit for bit.
    /// </summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dWte, ArrayView<float> dWpe, ArrayView<float> dOutput,
        ArrayView<int> plan, int segments, int b, int t, int c, float tokenScale = 1f, float positionScale = 1f)
    {
        var rows = CheckBackward(dWte, dWpe, dOutput, plan, segments, b, t, c);
        _backwardToken(s, Launch.Elementwise(_accelerator, (long)segments * c), dWte, dOutput, plan, rows, segments, c, tokenScale);
        _backwardPosition(s, Launch.Elementwise(_accelerator, (long)t * c), dWpe, dOutput, b, t, c, positionScale);
    }

    /// <summary>Checks a backward's shapes and plan; returns the row count B*T.</summary>
    private static int CheckBackward<T>(ArrayView<float> dWte, ArrayView<float> dWpe, ArrayView<T> dOutput, ArrayView<int> plan,
        int segments, int b, int t, int c) where T : unmanaged
    {
        Check.Positive(b, nameof(b));
        Check.Positive(t, nameof(t));
        var rows = b * t;
        Check.Length(plan, EmbeddingScatterPlan.Length(rows), nameof(plan));
        CheckShapes(dOutput, plan.SubView(0, rows), dWte, dWpe, b, t, c, nameof(dOutput), nameof(dWte), nameof(dWpe));
        if (segments < 1 || segments > rows)
            throw new ArgumentOutOfRangeException(nameof(segments), segments, $"A plan for {rows} rows has between 1 and {rows} segments.");
        return rows;
    }

    private static void CheckShapes<TRows, TTable>(ArrayView<TRows> rows, ArrayView<int> tokens, ArrayView<TTable> wte, ArrayView<TTable> wpe,
        int b, int t, int c, string rowsName, string wteName, string wpeName) where TRows : unmanaged where TTable : unmanaged
    {
        Check.Positive(b, nameof(b));
        Check.Positive(t, nameof(t));
        Check.Positive(c, nameof(c));
        Check.Length(tokens, (long)b * t, nameof(tokens));
        Check.Length(rows, (long)b * t * c, rowsName);
        if (wte.Length == 0 || wte.Length % c != 0)
            throw new ArgumentException($"'{wteName}' has {wte.Length} elements, expected a positive multiple of C = {c} (V, C).", wteName);
        if (wpe.Length % c != 0)
            throw new ArgumentException($"'{wpeName}' has {wpe.Length} elements, expected a multiple of C = {c} (maxT, C).", wpeName);
        Check.AtLeast(wpe, (long)t * c, wpeName);
    }
}
