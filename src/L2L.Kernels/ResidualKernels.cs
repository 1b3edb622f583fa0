// Residual connections: the element-wise sum that joins a block's branch back into the stream.
using ILGPU;

namespace L2L.Kernels;

/// <summary>
/// Residual add. Explicitly grouped, with a grid-stride loop: thread <c>i</c> of the launched
/// <c>stride = Grid.DimX * Group.DimX</c> threads handles elements <c>i, i + stride, ...</c>, so the
/// CPU accelerator gets a loop of work per thread and any length works with any launch.
/// The backward of <c>out = a + b</c> passes <c>dout</c> to both inputs and needs no kernel of its own
/// beyond <see cref="AccumulateKernel"/> where the residual stream's gradient is summed.
/// </summary>
public static class ResidualKernels
{
    /// <summary>
    /// <c>output = a + b</c>. Shapes: <c>output</c>, <c>a</c>, <c>b</c> all (N). <c>output</c> may alias <c>a</c> or <c>b</c>.
    /// </summary>
    public static void ResidualForwardKernel(ArrayView<float> output, ArrayView<float> a, ArrayView<float> b) =>
        ResidualForwardGenericKernel<float, Fp32Storage>(output, a, b);

    /// <summary>
    /// <see cref="ResidualForwardKernel"/> over any storage type: loads widened to FP32, the sum rounded once on store.
    /// </summary>
    public static void ResidualForwardGenericKernel<T, S>(ArrayView<T> output, ArrayView<T> a, ArrayView<T> b)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
            output[i] = st.FromFloat(st.ToFloat(a[i]) + st.ToFloat(b[i]));
    }

    /// <summary>
    /// <c>output = wa * a + wb * b</c>: a weighted residual add (a unit-scaled model's skip and branch weights), and with
    /// <c>wb = 0</c> an in-place scale. Shapes: <c>output</c>, <c>a</c>, <c>b</c> all (N). <c>output</c> may alias <c>a</c> or <c>b</c>.
    /// </summary>
    public static void ScaledAddKernel(ArrayView<float> output, ArrayView<float> a, ArrayView<float> b, float wa, float wb)
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
            output[i] = wa * a[i] + wb * b[i];
    }

    /// <summary>
    /// <see cref="ScaledAddKernel"/> over any storage type: loads widened to FP32, <c>wa * a + wb * b</c> formed in FP32 and
    /// rounded once on store. <c>output</c> may alias <c>a</c> or <c>b</c>.
    /// </summary>
    public static void ScaledAddGenericKernel<T, S>(ArrayView<T> output, ArrayView<T> a, ArrayView<T> b, float wa, float wb)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var st = default(S);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < output.Length; i += stride)
            output[i] = st.FromFloat(wa * st.ToFloat(a[i]) + wb * st.ToFloat(b[i]));
    }

    /// <summary>
    /// <c>target += source</c>. Shapes: <c>target</c>, <c>source</c> (N).
    /// </summary>
    public static void AccumulateKernel(ArrayView<float> target, ArrayView<float> source) =>
        AccumulateGenericKernel<float, Fp32Storage, float, Fp32Storage>(target, source);

    /// <summary>
    /// <c>target += source</c> over any storage types (e.g. an FP32 target and a 16-bit source): the sum is formed in
    /// FP32 and rounded once into the target's type. Shapes: <c>target</c>, <c>source</c> (N).
    /// </summary>
    public static void AccumulateGenericKernel<TT, ST, TS, SS>(ArrayView<TT> target, ArrayView<TS> source)
        where TT : unmanaged where ST : struct, IStorage<TT>
        where TS : unmanaged where SS : struct, IStorage<TS>
    {
        var t = default(ST);
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < target.Length; i += stride)
            target[i] = t.FromFloat(t.ToFloat(target[i]) + default(SS).ToFloat(source[i]));
    }
}
